"""Flame graphs and timelines from recorded calls, with no profiler.

* :func:`to_folded`: folded stacks, one line per distinct call path, ``main;load;parse 1234``,
  the input of flamegraph.pl, inferno (``inferno-flamegraph``) and speedscope. The value is
  the path's **self time in microseconds** (wall time, summed over the calls with that path):
  a call's duration minus the time of its children that ran inside it (same thread, same
  task), minus the time a generator or coroutine spent suspended. Folded calls count with the
  total time of the calls they stand for (the calls made inside them included: their own
  breakdown was not kept). Calls made while importing modules sit under ``<import>``.
* :func:`to_perfetto`: Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing): one
  complete (``X``) slice per call with its arguments, result and outcome in ``args``; a track
  per thread and per asyncio task, named by ``M`` metadata events. A call that does not nest
  inside its caller's slice (a generator resumed after its caller ended, a thread outliving
  its starter) goes to an extra track of the same thread. A generator or coroutine that was
  suspended is one slice per run between suspensions (``args.run``: ``2 of 5``), each nested
  where it ran; the totals are in ``args.resumes`` and ``args.suspended_ms``. After 64
  suspensions, the last slice kept runs on to the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from flowtrace_otel.events import CallEvent

IMPORT_FRAME = "<import>"


def _ordered(events: Iterable[CallEvent]) -> list[CallEvent]:
    """The events in start order (parents before their children)."""
    return sorted(events, key=lambda event: event.id)


def _inline(child: CallEvent, parent: CallEvent) -> bool:
    """True when ``child`` ran inside ``parent``'s time (not in another thread or task)."""
    return child.thread_id == parent.thread_id and not (child.task and child.task != parent.task)


def _own_time_ns(event: CallEvent) -> int:
    """Time the call (or the calls a fold stands for) was running, suspensions left out."""
    if event.fold is not None:
        return event.fold.total_ns
    return max(event.end_ns - event.start_ns - event.suspended_ns, 0)


def to_folded(events: Iterable[CallEvent], path: str | os.PathLike[str] | None = None) -> str:
    """Folded stacks (``a;b;c <self µs>``) for flame graphs; also written to ``path`` if given."""
    ordered = _ordered(events)
    by_id = {event.id: event for event in ordered}
    stacks: dict[int, str] = {}
    self_ns: dict[int, int] = {}
    for event in ordered:  # parents first: their stack is known when a child comes
        parent = by_id.get(event.parent_id) if event.parent_id is not None else None
        if parent is not None:
            stacks[event.id] = f"{stacks[parent.id]};{event.func_name}"
        else:
            prefix = f"{IMPORT_FRAME};" if event.import_time else ""
            stacks[event.id] = prefix + event.func_name
        self_ns[event.id] = _own_time_ns(event)
        if parent is not None and _inline(event, parent):
            self_ns[parent.id] -= _own_time_ns(event)
    totals: dict[str, int] = {}
    for event_id, stack in stacks.items():
        totals[stack] = totals.get(stack, 0) + max(self_ns[event_id], 0)
    lines = [f"{stack} {round(ns / 1000)}" for stack, ns in totals.items()
             if round(ns / 1000) > 0]
    text = "\n".join(lines) + ("\n" if lines else "")
    if path is not None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    return text


class _Track:
    """One timeline row: the ends of the slices open on it, innermost last."""

    __slots__ = ("ends", "tid")

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.ends: list[int] = []

    def fits(self, start: int, end: int) -> bool:
        """True (and placed) when a slice ``start``-``end`` nests in what is open here."""
        ends = self.ends
        while ends and ends[-1] <= start:
            ends.pop()
        if ends and end > ends[-1]:
            return False
        ends.append(end)
        return True


def _slice_args(event: CallEvent) -> dict[str, Any]:
    """What a slice shows when selected."""
    args: dict[str, Any] = {"function": f"{event.module}.{event.func_name}".lstrip("."),
                            "where": f"{event.file}:{event.line}"}
    if event.fold is not None:
        fold = event.fold
        args.update({"folded_calls": fold.count, "calls_inside": fold.inside,
                     "total_ms": fold.total_ns / 1e6, "min_ms": fold.min_ns / 1e6,
                     "max_ms": fold.max_ns / 1e6})
        if fold.raised:
            args["raised"] = fold.raised
        return args
    for name, text, _kind in event.args:
        args[f"arg.{name}"] = text
    if event.result_repr is not None and event.status == "returned":
        args["return"] = event.result_repr
    if event.exc_type is not None:
        message = f": {event.exc_msg}" if event.exc_msg else ""
        args["exception"] = event.exc_type + message
        if event.exc_state:
            args["exception_state"] = event.exc_state
    args["status"] = event.status
    if event.resumes or event.suspended_ns:
        args["resumes"] = event.resumes
        args["suspended_ms"] = event.suspended_ns / 1e6
    if event.import_time:
        args["import_time"] = True
    return args


def perfetto_trace(events: Iterable[CallEvent], pid: int | None = None) -> dict[str, Any]:
    """The Chrome trace-event document for ``events`` (see :func:`to_perfetto`)."""
    ordered = sorted(events, key=lambda event: (event.start_ns, event.id))
    pid = os.getpid() if pid is None else pid
    origin = ordered[0].start_ns if ordered else 0
    by_id = {event.id: event for event in ordered}
    base_of: dict[int, tuple[Any, ...]] = {}    # event id -> its thread's or task's track key
    rows: dict[tuple[Any, ...], list[_Track]] = {}
    names: dict[int, str] = {}
    track_of: dict[int, _Track] = {}
    next_tid = [0]

    def new_track(key: tuple[Any, ...], name: str) -> _Track:
        next_tid[0] += 1
        track = _Track(next_tid[0])
        rows.setdefault(key, []).append(track)
        extra = len(rows[key]) - 1
        names[track.tid] = name if not extra else f"{name} (outliving {extra})"
        return track

    # a generator or coroutine resumed between suspensions is one slice per run: every run
    # is placed in time order among all slices, so each nests where it ran
    pieces: list[tuple[int, int, int, int, CallEvent]] = []
    for event in ordered:
        runs = event.runs or [(event.start_ns, event.end_ns)]
        for index, (start, end) in enumerate(runs):
            pieces.append((start, event.id, index, max(end, start), event))
    pieces.sort(key=lambda piece: piece[:3])
    slices: list[dict[str, Any]] = []
    for start, _id, index, end, event in pieces:
        parent = by_id.get(event.parent_id) if event.parent_id is not None else None
        if index:  # a later run: on the rows its first run chose
            key = base_of[event.id]
            label = names[track_of[event.id].tid]
        elif event.task and (parent is None or parent.task != event.task):
            key = ("task", event.thread_id, event.task)
            label = f"task {event.task} ({event.thread_name})"
        elif parent is not None and parent.thread_id == event.thread_id:
            key = base_of[parent.id]
            label = ""
        else:
            key = ("thread", event.thread_id)
            label = f"thread {event.thread_name}"
        base_of[event.id] = key
        tracks = rows.get(key) or [new_track(key, label or f"thread {event.thread_name}")]
        if index:  # the row of its previous run first
            tracks = [track_of[event.id], *tracks]
        elif not label and parent is not None:  # its caller's row first: slices nest there
            tracks = [track_of[parent.id], *tracks]
        track = next((t for t in tracks if t.fits(start, end)), None)
        if track is None:
            track = new_track(key, names[tracks[0].tid])
            track.fits(start, end)
        track_of[event.id] = track
        name = event.func_name
        if event.fold is not None:
            name = f"{event.func_name} ×{event.fold.count:,} (folded)"
        args = _slice_args(event)
        if event.runs:
            args["run"] = f"{index + 1} of {len(event.runs)}"
        slices.append({"ph": "X", "name": name, "cat": "call", "pid": pid, "tid": track.tid,
                       "ts": (start - origin) / 1000, "dur": (end - start) / 1000,
                       "args": args})
    meta: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
         "args": {"name": "flowtrace-otel"}}]
    for tid, name in sorted(names.items()):
        meta.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                     "args": {"name": name}})
        meta.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                     "args": {"sort_index": tid}})
    return {"traceEvents": meta + slices, "displayTimeUnit": "ms",
            "otherData": {"origin_epoch_ns": origin, "source": "flowtrace_otel"}}


def to_perfetto(events: Iterable[CallEvent],
                path: str | os.PathLike[str] | None = None) -> str:
    """Chrome trace-event JSON for Perfetto / chrome://tracing; also written to ``path``."""
    text = json.dumps(perfetto_trace(events), ensure_ascii=False)
    if path is not None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return text
