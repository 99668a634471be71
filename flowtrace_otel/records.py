"""The call record: what every core produces for one call, and what consumers read.

A core (the pure-Python :mod:`flowtrace_otel.monitoring`, later the C monitor) creates one
:class:`Record` per traced call and hands it to its consumers (a session, the OpenTelemetry
bridge) when the call starts a trace (``on_root``) and when it ends (``on_end``). The fields
are named and typed; a consumer reads the *call* fields, may keep its own state in
:attr:`Record.ext` (the one field a core never touches after creating it), and never reads
the ``_``-prefixed fields, which are the Python core's bookkeeping (a C core keeps its own in
C structures).

Why a ``__slots__`` class and not a list: measured (``bench/record_cost.py``, 3.12 and 3.13),
building a 26-field slots object with ``object.__new__`` and one store per field, then ending
it, costs about twice a list literal (~300 ns more per call on this shared VM, a few percent of
a recorded call: ``bench/run.py`` fib, core mode); through an ``__init__`` it would cost over
three times. In exchange mypy checks every access and a C type can expose the same names.

Generators and coroutines: a record is one call from its first start to its final end. Each
suspension and resumption is kept in :attr:`Record.runs` (bounded, :data:`MAX_RUN_MARKS`), so
a timeline can draw each run slice (:meth:`Record.run_slices`); the totals (``suspended``,
``resumes``) count every one of them.
"""

from __future__ import annotations

import threading
from types import CodeType
from typing import Any, Final, Literal

from flowtrace_otel.filters import module_name_for

_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200  # inspect.CO_*
SUSPENDABLE_FLAGS: Final = _CO_GENERATOR | _CO_COROUTINE | _CO_ASYNC_GENERATOR
ASYNC_FLAGS: Final = _CO_COROUTINE | _CO_ASYNC_GENERATOR

#: ``Record.result`` of a call whose values a consumer declined at its start (nothing captured)
NO_VALUES: Final = False
#: run-slice marks kept per generator/coroutine: 64 suspensions and their resumptions; after
#: that the last slice kept runs on to the end (the totals still count every suspension)
MAX_RUN_MARKS: Final = 128

KIND_POSITIONAL, KIND_KEYWORD, KIND_VAR_POSITIONAL, KIND_VAR_KEYWORD = "p", "k", "*", "**"

#: how a call ended (None while it is open)
Status = Literal["returned", "raised", "closed", "unfinished"]


class CodeInfo:
    """What a core needs to know about one user function, computed once per code object."""

    __slots__ = (
        "code",
        "filename",
        "full_name",
        "ghost",
        "hook",
        "is_async",
        "line",
        "module",
        "params",
        "qualname",
        "special",
        "suspendable",
    )

    def __init__(self, code: CodeType, redact: tuple[str, ...]) -> None:
        """Read names, location and parameters off ``code``."""
        self.code = code
        self.qualname = code.co_qualname
        self.module = module_name_for(code.co_filename)
        #: ``module.qualname``, as in ``code.function.name``
        self.full_name = f"{self.module}.{self.qualname}" if self.module else self.qualname
        self.filename = code.co_filename
        self.line = code.co_firstlineno
        self.params = _parameters(code, redact)
        self.suspendable = bool(code.co_flags & SUSPENDABLE_FLAGS)
        self.is_async = bool(code.co_flags & ASYNC_FLAGS)
        self.special = self.is_async  # is_async or a hand-off hook: py_start's rare branch
        self.hook: Any = None
        self.ghost = Record.blank(self)


class ThreadState:
    """Per-thread tracing state: the stack of open records and the adopted parent."""

    __slots__ = ("base", "base_ctx", "ident", "name", "stack")

    def __init__(self) -> None:
        """Start empty; ``base`` is set when a traced call started this thread's work."""
        self.stack: list[Record] = []
        self.base: Record | None = None
        self.base_ctx: object = None
        self.ident = threading.get_ident()
        # never threading.current_thread(): in a thread threading does not know (yet), it
        # would create and register a _DummyThread, which the program could see
        thread = getattr(threading, "_active", {}).get(self.ident)
        self.name: str = thread.name if thread is not None else f"thread-{self.ident}"


class Record:
    """One traced call. Built by a core; read (and ``ext`` written) by consumers.

    ``id`` 0 marks a record nobody reports: a function's *ghost* (pushed for every call of an
    unsampled trace, shared, never written) or a stand-in shielding a traced call.
    """

    __slots__ = (
        "_kids",
        "_last_raised",
        "_mark",
        "_owner",
        "args",
        "caught",
        "ctx",
        "end",
        "error",
        "exc",
        "exc_state",
        "ext",
        "id",
        "info",
        "outer_ctx",
        "parent",
        "recording",
        "result",
        "resumes",
        "root",
        "runs",
        "start",
        "status",
        "suspended",
        "task",
        "thread",
    )

    # --- the call ---------------------------------------------------------------------------
    info: CodeInfo
    """The function called."""
    parent: Record | None
    """The caller (or the call that handed this thread/task over); None for a trace's root."""
    root: Record
    """The outermost record of this trace (itself for a root)."""
    id: int
    """Sequence number, unique per monitor; 0 for ghosts and stand-ins."""
    thread: ThreadState
    """The thread that started the call."""
    start: int
    """``perf_counter_ns`` at the call's start (add the monitor's ``epoch_offset_ns``)."""
    end: int
    """``perf_counter_ns`` at its end; 0 while open."""
    status: Status | None
    """How the call ended; None while open."""
    recording: bool
    """False in a trace nobody records (the sampler said no): nothing captured or reported."""
    # --- values -------------------------------------------------------------------------------
    args: tuple[tuple[str, str, str], ...] | None
    """(parameter, captured text, kind) for each argument; None when not captured."""
    result: str | Literal[False] | None
    """Captured text of the return value; None when not captured; :data:`NO_VALUES` declined."""
    exc: tuple[str, str, int] | None
    """(type name, message, id of the exception) when an exception left the call."""
    exc_state: Literal["propagated", "caught"] | None
    """``propagated``, or ``caught`` once the caller handled it."""
    caught: list[tuple[str, str]] | None
    """(type name, message) of exceptions raised and handled inside the call (at most 16)."""
    error: BaseException | None
    """The exception object that left the call, only while ``on_end`` runs."""
    # --- generators, coroutines, tasks --------------------------------------------------------
    suspended: int
    """Nanoseconds spent suspended."""
    resumes: int
    """Times resumed."""
    runs: list[int] | None
    """Suspension and resumption times, alternating (bounded): see :meth:`run_slices`."""
    task: str | None
    """The asyncio task's name, for a task's first coroutine."""
    # --- context tokens (read through the consumer's ``ctx_get``; compared by identity) -------
    ctx: object
    """The context current at the call's start."""
    outer_ctx: object
    """The context expected at its start if nothing opened a span in between: the caller's
    ``ctx``, or the hand-off's context (a thread, a task, a root handed over by an unrecorded
    call). ``ctx is not outer_ctx``: a library span was opened between the two."""
    # --- the consumer's -----------------------------------------------------------------------
    ext: Any
    """Consumer-owned state (the bridge's span ids and counters); a core sets it to None."""
    # --- the Python core's bookkeeping: consumers never read these ----------------------------
    _mark: int
    """``perf_counter_ns`` of the last suspension."""
    _kids: dict[int, Any] | None
    """{id(frame): (frame, record)}: the suspended generators this record sweeps (3.13+)."""
    _last_raised: Record | None
    """The child whose exception is unwinding into this call, if any."""
    _owner: Record | None
    """Suspended generators only: the open record that sweeps it (None: ``parent``)."""

    @classmethod
    def blank(cls, info: CodeInfo, parent: Record | None = None) -> Record:
        """A record nobody reports (``id`` 0): a ghost, a stand-in or an owner of orphans."""
        rec = object.__new__(cls)
        rec.info = info
        rec.parent = parent
        rec.root = parent.root if parent is not None else rec
        rec.thread = parent.thread if parent is not None else _NOBODY
        rec.id = rec.start = rec.end = rec.suspended = rec.resumes = rec._mark = 0
        rec.args = rec.result = rec.exc = rec.exc_state = rec.caught = rec.error = None
        rec.runs = rec.task = rec.ext = rec.status = rec.ctx = rec.outer_ctx = None
        rec._kids = rec._last_raised = rec._owner = None
        rec.recording = False
        return rec

    @property
    def detached(self) -> bool:
        """True when a span was opened between the caller's start and this call's."""
        return self.ctx is not self.outer_ctx

    def run_slices(self) -> list[tuple[int, int]]:
        """(start, end) of each time the call ran, in ``perf_counter_ns``; one for a plain call.

        A generator or coroutine has one slice per run between suspensions (the first
        :data:`MAX_RUN_MARKS` marks; the last slice kept runs on to the end). A call that
        ended while suspended (closed without an event, unfinished) ends at its suspension.
        """
        runs = self.runs
        end = self.end or self.start
        if not runs:
            return [(self.start, end)]
        points = [self.start, *runs]
        if len(runs) % 2 == 0:  # running when it ended
            points.append(max(end, runs[-1]))
        return list(zip(points[0::2], points[1::2], strict=True))

    def __repr__(self) -> str:
        """``<Record 3 fn returned>`` (no values: they are the program's)."""
        name = self.info.qualname if self.info is not None else "?"
        return f"<Record {self.id} {name} {self.status or 'open'}>"


#: the thread of records that belong to none (ghosts, the orphans' owner)
_NOBODY = object.__new__(ThreadState)
_NOBODY.stack, _NOBODY.base, _NOBODY.base_ctx, _NOBODY.ident, _NOBODY.name = [], None, None, 0, ""


def _parameters(code: CodeType, redact: tuple[str, ...]) -> tuple[tuple[str, str, bool], ...]:
    """(name, kind, redacted) for each parameter of ``code``, in order."""
    names = code.co_varnames
    n_pos = code.co_argcount
    n_kw = code.co_kwonlyargcount
    out: list[tuple[str, str, bool]] = []
    for name in names[:n_pos]:
        out.append((name, KIND_POSITIONAL, _secret(name, redact)))
    index = n_pos + n_kw
    for name in names[n_pos:index]:
        out.append((name, KIND_KEYWORD, _secret(name, redact)))
    if code.co_flags & 0x04:  # CO_VARARGS
        out.append((names[index], KIND_VAR_POSITIONAL, _secret(names[index], redact)))
        index += 1
    if code.co_flags & 0x08:  # CO_VARKEYWORDS
        out.append((names[index], KIND_VAR_KEYWORD, _secret(names[index], redact)))
    return tuple(out)


def _secret(name: str, redact: tuple[str, ...]) -> bool:
    """True when a parameter name looks secret (by word: :mod:`flowtrace_otel.redaction`)."""
    from flowtrace_otel.redaction import is_secret  # noqa: PLC0415 - once per code object

    return is_secret(name, redact)
