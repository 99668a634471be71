"""What a call record costs to build and end, by representation (the hot path's share).

Usage: ``.venv-3.12/bin/python bench/record_cost.py``. Simulates ``py_start`` building a
26-field record and ``py_return`` reading and writing it, interleaved, CPU medians, for:

* ``list``: a list literal indexed by constants (the Python core's record until issue 13);
* ``slots-new``: :class:`flowtrace_otel.records.Record` built with ``object.__new__`` and one
  store per field (the Python core's record now);
* ``slots-init``: the same class built through an ``__init__`` (the obvious way, slowest);
* ``c-kwargs``: ``flowtrace_otel._native.Record`` built from Python with keywords (the tests'
  way, not the monitor's), then ended from Python;
* ``c-new``: the C record built and ended by ``ft_record_new`` in a C loop
  (``_native._bench_records``): what the C monitor will pay, with no Python in the loop.

Prints ns per simulated call over an empty loop, each one's ratio to ``list`` and, for the C
record, to ``slots-new``.  The C cases are left out when the extension is not built.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowtrace_otel.records import Record

try:
    from flowtrace_otel import _native
except ImportError:  # no C build: the Python cases only
    _native = None  # type: ignore[assignment]

N = 200_000
START, END, ID, RESULT, RECORDING, STATUS, KIDS = 5, 6, 3, 8, 19, 21, 22


class InitRecord:
    """Record's fields, set by an ``__init__``."""

    __slots__ = Record.__slots__

    def __init__(self, info: object, parent: object, ident: int, thread: object,
                 ctx: object, recording: bool) -> None:
        self.info, self.parent, self.root, self.id = info, parent, parent, ident
        self.thread = thread
        self.start = self.end = self.suspended = self.resumes = self._mark = 0
        self.args = self.result = self.exc = self.exc_state = self.caught = self.error = None
        self.runs = self.task = self.ext = self.status = None
        self._kids = self._last_raised = self._owner = None
        self.ctx = self.outer_ctx = ctx
        self.recording = recording


def empty() -> None:
    """The loop alone."""
    ids = iter(range(1, 10**9))
    for _ in range(N):
        next(ids)


def as_list() -> None:
    """A list literal, fields by index."""
    info = parent = state = ctx = None
    ids = iter(range(1, 10**9))
    for _ in range(N):
        rec = [info, parent, parent, next(ids), state, 0, 0, None, None, None, None, None, ctx,
               None, 0, 0, None, None, None, True, None, None, None, None, None, None]
        rec[START] = 1
        if not rec[ID]:
            continue
        rec[END] = 2
        rec[STATUS] = "returned"
        if rec[KIDS]:
            pass
        if rec[RECORDING] and rec[RESULT] is None:
            rec[RESULT] = "x"


def as_slots_new() -> None:
    """Record via ``object.__new__`` and a store per field, as monitoring.py builds it."""
    info = parent = state = ctx = None
    ids = iter(range(1, 10**9))
    new = object.__new__
    for _ in range(N):
        rec = new(Record)
        rec.info = info  # type: ignore[assignment]
        rec.parent = parent
        rec.id = next(ids)
        rec.thread = state  # type: ignore[assignment]
        rec.start = rec.end = rec.suspended = rec.resumes = rec._mark = 0
        rec.args = rec.result = rec.exc = rec.exc_state = rec.caught = rec.error = None
        rec.runs = rec.task = rec.ext = rec.status = None
        rec._kids = rec._last_raised = rec._owner = None
        rec.ctx = ctx
        rec.outer_ctx = ctx
        rec.root = parent  # a child's root is its parent's (a root's own would be a cycle)
        rec.recording = True
        rec.start = 1
        if not rec.id:
            continue
        rec.end = 2
        rec.status = "returned"
        if rec._kids:
            pass
        if rec.recording and rec.result is None:
            rec.result = "x"


def as_slots_init() -> None:
    """The same fields through an ``__init__``."""
    info = parent = state = ctx = None
    ids = iter(range(1, 10**9))
    for _ in range(N):
        rec = InitRecord(info, parent, next(ids), state, ctx, True)
        rec.start = 1
        if not rec.id:
            continue
        rec.end = 2
        rec.status = "returned"
        if rec._kids:
            pass
        if rec.recording and rec.result is None:
            rec.result = "x"


def as_c_kwargs() -> None:
    """The C record built from Python with keywords, ended from Python."""
    info = parent = state = ctx = None
    ids = iter(range(1, 10**9))
    new = _native.Record
    for _ in range(N):
        rec = new(info=info, parent=parent, root=parent, id=next(ids), thread=state, ctx=ctx,
                  outer_ctx=ctx, recording=True)
        rec.start = 1
        if not rec.id:
            continue
        rec.end = 2
        rec.status = "returned"
        if rec.recording and rec.result is None:
            rec.result = "x"


def as_c_new() -> None:
    """ft_record_new and the same stores, in C (the loop included: C's is nearly free)."""
    _native._bench_records(N, None, None, None, None)


def main() -> None:
    """Interleaved repeats; CPU medians per simulated call."""
    cases: dict[str, Callable[[], None]] = {"empty": empty, "list": as_list,
                                            "slots-new": as_slots_new,
                                            "slots-init": as_slots_init}
    if _native is not None:
        cases |= {"c-kwargs": as_c_kwargs, "c-new": as_c_new}
    times: dict[str, list[int]] = {name: [] for name in cases}
    for _ in range(11):
        for name, case in cases.items():
            began = time.process_time_ns()
            case()
            times[name].append(time.process_time_ns() - began)
    base = statistics.median(times["empty"]) / N
    net = {name: statistics.median(t) / N - base for name, t in times.items() if name != "empty"}
    if "c-new" in net:  # its loop runs in C: the Python loop's cost is not in it to subtract
        net["c-new"] += base
    print(f"Python {sys.version.split()[0]}, ns per simulated call over the loop's {base:.0f} ns")
    for name, ns in net.items():
        versus = f"   {ns / net['slots-new']:.2f}x slots-new" if name.startswith("c-") else ""
        print(f"  {name:10s} {ns:7.1f} ns   {ns / net['list']:.2f}x list{versus}")


if __name__ == "__main__":
    main()
