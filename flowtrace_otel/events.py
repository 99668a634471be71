"""``CallEvent``: one finished call, the core's public data model."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Iterator
from typing import Any

from flowtrace_otel import records as r
from flowtrace_otel.folding import FOLDED, Fold


@dataclasses.dataclass
class CallEvent:
    """One call of a user function: who called it, with what, and how it ended."""

    id: int
    parent_id: int | None
    func_name: str                      # qualified name: ``Store.save``, ``outer.<locals>.inner``
    module: str
    file: str
    line: int
    args: list[tuple[str, str, str]]    # (parameter, captured text, kind: p, k, *, **)
    args_repr: str                      # the arguments as the tree shows them: ``3, key='x'``
    result_repr: str | None
    exc_type: str | None
    exc_msg: str | None
    exc_state: str | None               # "caught" (the caller handled it) or "propagated"
    caught: list[tuple[str, str]]       # exceptions raised and handled inside this call
    status: str                         # returned, raised, closed, unfinished
    start_ns: int                       # epoch nanoseconds
    end_ns: int
    thread_id: int
    thread_name: str
    task: str | None                    # asyncio task name for a task's first coroutine
    suspended_ns: int                   # time a generator/coroutine spent suspended
    resumes: int
    #: set on an event that stands for folded calls (``status`` "folded"): their aggregate
    fold: Fold | None = None
    #: made while an import ran a module body (an outermost call under ``import``), or inside one
    import_time: bool = False
    #: a generator's or coroutine's run slices (start, end), epoch ns, when it was suspended
    #: (the first 64; the last one kept runs on to the end); empty for a plain call
    runs: tuple[tuple[int, int], ...] = ()

    @property
    def duration(self) -> float:
        """Wall time from start to end, in seconds."""
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def start(self) -> float:
        """Start time, epoch seconds."""
        return self.start_ns / 1e9

    @property
    def end(self) -> float:
        """End time, epoch seconds."""
        return self.end_ns / 1e9

    @property
    def calls(self) -> int:
        """How many calls this event stands for: 1, or a fold's calls (inside ones included)."""
        return self.fold.calls if self.fold is not None else 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field plus ``duration``."""
        data = dataclasses.asdict(self)
        data["duration"] = self.duration
        return data


_CALL_ORDER = {r.KIND_POSITIONAL: 0, r.KIND_VAR_POSITIONAL: 1, r.KIND_KEYWORD: 2,
               r.KIND_VAR_KEYWORD: 3}


def format_args(args: list[tuple[str, str, str]] | tuple[tuple[str, str, str], ...]) -> str:
    """Render captured arguments the way a call is written: ``1, 'x', *(2, 3), key=4, **{}``.

    Keyword-only parameters follow ``*args`` as in a call, whatever their order in the
    signature; empty ``*args``/``**kwargs`` are left out.
    """
    parts: list[str] = []
    ordered = sorted(args, key=lambda arg: _CALL_ORDER.get(arg[2], 4))  # stable within a kind
    for name, text, kind in ordered:
        if kind == r.KIND_POSITIONAL:
            parts.append(text)
        elif kind == r.KIND_KEYWORD:
            parts.append(f"{name}={text}")
        elif kind == r.KIND_VAR_POSITIONAL:
            if text != "()":
                parts.append("*" + text)
        elif text not in ("{}",):
            parts.append("**" + text)
    return ", ".join(parts)


def to_event(rec: r.Record, epoch_offset_ns: int) -> CallEvent:
    """Convert a finished record into a :class:`CallEvent`."""
    info: r.CodeInfo = rec.info
    parent = rec.parent
    exc = rec.exc
    args = list(rec.args or ())
    state: r.ThreadState = rec.thread
    return CallEvent(
        id=rec.id,
        parent_id=parent.id if parent is not None else None,
        func_name=info.qualname,
        module=info.module,
        file=info.filename,
        line=info.line,
        args=args,
        args_repr=format_args(args),
        result_repr=rec.result if rec.result is not r.NO_VALUES else None,
        exc_type=exc[0] if exc else None,
        exc_msg=exc[1] if exc else None,
        exc_state=rec.exc_state,
        caught=list(rec.caught or ()),
        status=rec.status or "unfinished",
        start_ns=rec.start + epoch_offset_ns,
        end_ns=(rec.end or rec.start) + epoch_offset_ns,
        thread_id=state.ident,
        thread_name=state.name,
        task=rec.task,
        suspended_ns=rec.suspended,
        resumes=rec.resumes,
        runs=(tuple((start + epoch_offset_ns, end + epoch_offset_ns)
                    for start, end in rec.run_slices()) if rec.runs else ()),
    )


def folded_event(first: CallEvent, fold: Fold) -> CallEvent:
    """The event standing for folded calls: where and when the first of them ran, no values."""
    return dataclasses.replace(
        first, args=[], args_repr="…", result_repr=None, exc_type=None, exc_msg=None,
        exc_state=None, caught=[], status=FOLDED, task=None, suspended_ns=0, resumes=0,
        runs=(), fold=fold)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC passes while many events are built: each would walk all of them again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
