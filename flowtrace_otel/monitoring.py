"""The hot path: ``sys.monitoring`` callbacks that turn events into call records.

How it works, in a minute:

* The first ``PY_START`` of a code object asks the filter whether it is user code and caches
  the answer keyed by ``id(code)`` (the entry keeps the code object alive, so an id is never
  reused while cached). Everything else gets ``DISABLE`` and costs nothing after its first call.
  The exception events (``PY_UNWIND``, ``PY_THROW``, ``EXCEPTION_HANDLED``) cannot be disabled
  (returning ``DISABLE`` there replaces the user's exception), so they consult the same cache.
* Each thread keeps a stack of open records. ``PY_START``/``PY_RESUME``/``PY_THROW`` push,
  ``PY_RETURN``/``PY_YIELD``/``PY_UNWIND`` pop. A suspended generator or coroutine is parked in
  ``suspended`` under its frame and pushed again when resumed, on whatever thread resumes it,
  so the consumer's calls between two ``next()`` stay the consumer's. A generator's parent is
  the call that first advanced it; a coroutine is one record from its first start to its final
  return, with its resumptions and suspended time counted.
* Closing a suspended generator emits no event on 3.13+ (cpython#140373). Each suspended
  generator has an owner (its parent, or the nearest open ancestor once the parent ended, or
  ``orphans``); when the owner ends, :meth:`Monitor.sweep_generators` probes the owner's parked
  frames and ends the closed ones at their last suspension. ``orphans`` is swept whenever it
  doubles, and everything left ends when tracing stops (``closed`` or ``unfinished``).
* Only ``PY_START`` and ``PY_RETURN`` of plain calls are hot; everything about generators,
  exceptions and hand-offs runs on the rarer events.
* A call in a trace nobody records (the sampler said no) pushes its function's *ghost*: one
  record shared by all such calls, never written, so such a call allocates nothing and reads
  no clock. Only the first call of a thread handed over by such a trace looks further: under
  a context attached since (a request span), it is asked about like a root.
* Callbacks take no lock: a thread preempted or frozen (at exit) inside one stalls nobody.
* A pop only happens when the top record belongs to the returning code: returns of frames that
  started before tracing did are ignored.
* Hand-offs between threads and tasks are observed, never patched: a few standard-library
  functions (``Thread.start``, ``BaseEventLoop.create_task``, the thread pool's work items) are
  watched by :mod:`flowtrace_otel.handoff`, which records the caller so that the new thread's or
  task's first call gets the right parent.
* A record is a plain list (a ``__slots__`` object costs three times as much to build); the
  index constants below name its fields. Finished records go to the consumer's ``on_end``.
* Callbacks never raise into user code: an internal error is logged once and tracing stops.
  The exception of a signal handler that ran inside a callback (Ctrl-C, a ``SIGALRM``
  timeout, ``sys.exit``) is the program's, not ours: it goes on into the program's code
  (:mod:`flowtrace_otel.interrupts`).
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, Protocol

from flowtrace_otel import _settings
from flowtrace_otel.capture import Capturer, exception_message
from flowtrace_otel.filters import CodeFilter, module_name_for
from flowtrace_otel.interrupts import program_exception

log = logging.getLogger("flowtrace_otel")
M = sys.monitoring
E = M.events
DISABLE = M.DISABLE
EVENTS = (
    E.PY_START | E.PY_RETURN | E.PY_YIELD | E.PY_RESUME | E.PY_THROW | E.PY_UNWIND
    | E.EXCEPTION_HANDLED
)
TOOL_NAME = "flowtrace_otel"
FREE_TOOL_IDS = (3, 4)
_CO_GENERATOR, _CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x200  # inspect.CO_*
_SUSPENDABLE = _CO_GENERATOR | _CO_COROUTINE | _CO_ASYNC_GENERATOR
_CLOSE_EMITS_NO_EVENT = sys.version_info >= (3, 13)  # cpython#140373
_ORPHAN_SWEEP_AT = 256  # suspended generators nobody sweeps, before a sweep of them all
_TYPED_CACHED = 512  # typed or exec'd code objects kept in the cache (each keeps one alive)

Record = list[Any]
# --- the fields of a record -------------------------------------------------------------------
INFO = 0         # CodeInfo of the function
PARENT = 1       # parent record or None
ROOT = 2         # outermost record of this trace (itself for a root)
ID = 3           # sequence number, unique per monitor
THREAD = 4       # ThreadState of the thread that started the call
START = 5        # perf_counter_ns at start
END = 6          # perf_counter_ns at end (0 while open)
ARGS = 7         # tuple of (name, text, kind) or None
RESULT = 8       # text of the return value or None
EXC = 9          # (type name, message, id(exception)) when an exception left the call
EXC_STATE = 10   # "propagated", or "caught" once the caller handled it
CAUGHT = 11      # list of (type name, message) handled inside the call, or None
CTX = 12         # the OpenTelemetry context object current at start (bridge only)
DETACHED = 13    # True when a library span was opened between the parent's start and ours
SUSPENDED = 14   # ns spent suspended (generators, coroutines)
RESUMES = 15     # times resumed
MARK = 16        # perf_counter_ns of the last suspension
TASK = 17        # asyncio task name for a task's first coroutine, else None
EXT = 18         # consumer-owned state (the bridge's span ids and counters)
RECORDING = 19   # False in unsampled traces: nothing captured, nothing reported
ERROR = 20       # the exception object, only while on_end runs
STATUS = 21      # "returned", "raised", "closed", "unfinished"
OPEN_CHILDREN = 22  # None, or {id(frame): (frame, record)}: the suspended generators it sweeps
LAST_RAISED = 23    # the child whose exception is unwinding into this call, if any
OWNER = 24       # suspended generators only: the open record that sweeps it (None: PARENT)
BASE_CTX = 25    # a root begun in a thread handed over by an unrecorded call: the context of the
                 # hand-over (the bridge records it only as a child of a library span since)
_FIELDS = 26

#: RESULT of a call whose values a consumer declined at its start (nothing captured)
NO_VALUES = False

KIND_POSITIONAL, KIND_KEYWORD, KIND_VAR_POSITIONAL, KIND_VAR_KEYWORD = "p", "k", "*", "**"


class Consumer(Protocol):
    """What receives records: the in-memory session or the OpenTelemetry bridge."""

    def on_root(self, record: Record) -> bool:
        """Called when a trace starts; return False to record nothing for it."""

    def on_end(self, record: Record) -> None:
        """Called once for every finished record of a recorded trace."""


class CodeInfo:
    """What the tracer needs to know about one user function, computed once."""

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
        self.suspendable = bool(code.co_flags & _SUSPENDABLE)
        self.is_async = bool(code.co_flags & (_CO_COROUTINE | _CO_ASYNC_GENERATOR))
        self.special = self.is_async  # is_async or a hand-off hook: py_start's rare branch
        self.hook: Any = None
        self.ghost = _ghost(self)


def _ghost(info: CodeInfo) -> Record:
    """The one record pushed for every call of ``info`` in a trace nobody records.

    Shared by all such calls (threads, recursion), so an unsampled call allocates nothing and
    reads no clock. Its ``ID`` is 0 (never reported, never an owner of parked generators) and
    the fast paths never write to it.
    """
    ghost: Record = [None] * _FIELDS
    ghost[INFO], ghost[ROOT], ghost[ID], ghost[RECORDING] = info, ghost, 0, False
    ghost[START] = ghost[END] = ghost[SUSPENDED] = ghost[RESUMES] = 0
    return ghost


def _parameters(code: CodeType, redact: tuple[str, ...]) -> tuple[tuple[str, str, bool], ...]:
    """(name, kind, redacted) for each parameter of ``code``, in order."""
    names = code.co_varnames
    n_pos = code.co_argcount + code.co_posonlyargcount * 0
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


#: every internal error contained so far in this process (the first 100): the project's own
#: test suite fails a test that produced one (tests/conftest.py)
CONTAINED_ERRORS: list[BaseException] = []


class ToolIdTaken(RuntimeError):
    """No free ``sys.monitoring`` tool id (3 and 4 are the ones left for tools like this)."""


def claim_tool_id(order: tuple[int, ...] = FREE_TOOL_IDS) -> int:
    """Claim the first free of tool ids 3 and 4 in ``order``, or raise :class:`ToolIdTaken`."""
    for tool_id in order:
        if M.get_tool(tool_id) is None:
            M.use_tool_id(tool_id, TOOL_NAME)
            return tool_id
    holders = ", ".join(f"{i}: {M.get_tool(i)!r}" for i in FREE_TOOL_IDS)
    raise ToolIdTaken(
        f"flowtrace_otel needs sys.monitoring tool id 3 or 4, but both are taken ({holders}); "
        "stop that tool or run without it"
    )


def _globals_running(code: CodeType) -> dict[str, Any] | None:
    """The globals of the innermost frame running ``code`` (the monitored frame), or None."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(8):  # filter <- learn <- [helper] <- callback <- the monitored frame
        if frame is None:
            return None
        if frame.f_code is code:
            return frame.f_globals
        frame = frame.f_back
    return None


class Monitor:
    """Owns the tool id, the callbacks, the per-code cache and the per-thread stacks."""

    def __init__(self, code_filter: CodeFilter, capture: Capturer, capture_args: bool,
                 capture_result: bool, redact: tuple[str, ...]) -> None:
        """Prepare; nothing is monitored until :meth:`start`."""
        self.filter = code_filter
        self.capture = capture
        self.capture_args = capture_args
        self.capture_result = capture_result
        self.redact = redact
        self.consumers: list[Consumer] = []
        self.tool_id: int | None = None
        self.infos: dict[int, tuple[CodeType, CodeInfo | None]] = {}
        #: ids of the typed/exec'd code objects in ``infos``, oldest first (bounded)
        self.typed: collections.deque[int] = collections.deque()
        self.suspended: dict[int, tuple[FrameType, Record]] = {}
        #: owner of suspended generators that no open record sweeps (see sweep_generators)
        self.orphans: Record = [None] * _FIELDS
        self.orphans[END] = 0
        self.orphan_limit = _ORPHAN_SWEEP_AT
        self.tls = threading.local()
        self.errors: list[BaseException] = []
        self.ctx_get: Callable[[], object] | None = None
        self.epoch_offset_ns = time.time_ns() - time.perf_counter_ns()
        self._ids = iter(range(1, sys.maxsize))
        from flowtrace_otel import handoff  # noqa: PLC0415 - handoff needs this module's names
        self.handoff = handoff.HandOff(self)

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, order: tuple[int, ...] = FREE_TOOL_IDS) -> None:
        """Claim a tool id (the first free in ``order``), register the callbacks, switch on."""
        self.tool_id = claim_tool_id(order)
        self._register()
        M.set_events(self.tool_id, EVENTS)

    def stop(self) -> None:
        """Switch events off, end what is still open, and free the tool id."""
        if self.tool_id is None:
            return
        tool_id, self.tool_id = self.tool_id, None
        M.set_events(tool_id, 0)
        for event in _EVENT_NAMES:
            M.register_callback(tool_id, getattr(E, event), None)
        M.free_tool_id(tool_id)
        self.end_open_records()

    def set_consumers(self, consumers: list[Consumer]) -> None:
        """Replace the consumers; callbacks are rebuilt so the hot path reads locals only."""
        self.consumers = list(consumers)
        if self.tool_id is not None:
            self._register()

    def thread_state(self) -> ThreadState:
        """This thread's state, created on first use."""
        try:
            state: ThreadState = self.tls.state
        except AttributeError:
            state = self.tls.state = ThreadState()
            self.handoff.adopt_thread(state)
        return state

    def current(self) -> tuple[Record | None, object]:
        """The innermost open record of this thread/task and the context expected with it."""
        state = self.thread_state()
        if state.stack:
            top = state.stack[-1]
            return top, top[CTX]
        return state.base, state.base_ctx

    # --- cache -------------------------------------------------------------------------------
    def learn(self, code: CodeType) -> tuple[CodeType, CodeInfo | None]:
        """Decide once whether ``code`` is traced (or a hand-off hook) and cache the answer.

        No lock: a callback must never wait (a daemon thread frozen at interpreter exit while
        holding a lock would hang the main thread's next callback for ever). Two threads
        meeting a new function at once may both decide; ``dict.setdefault`` is atomic, so the
        first answer stored is the one both use.
        """
        info: CodeInfo | None = None
        hook = self.handoff.hook_for(code)
        if hook is not None:
            info = CodeInfo(code, ())
            info.hook = hook
            info.special = True
        elif self.filter.is_user_code(code):
            info = CodeInfo(code, self.redact)
        elif code.co_filename.startswith("<"):  # typed at a prompt, exec'd, or generated
            module = self.filter.typed_code_module(code, _globals_running)
            if module is not None:
                info = CodeInfo(code, self.redact)
                info.module, info.full_name = module, f"{module}.{info.qualname}"
        entry = (code, info)
        if code.co_filename.startswith("<"):
            # code made at run time: generated code (dataclasses, namedtuple) is never
            # cached, typed or exec'd code only the latest few: caching keeps a code object
            # alive. DISABLE already silences the disableable events of generated code; the
            # few others re-decide (one frame walk). Evicted typed code is learnt again.
            if info is None:
                return entry
            entry = self.infos.setdefault(id(code), entry)
            self.typed.append(id(code))
            if len(self.typed) > _TYPED_CACHED:
                self.infos.pop(self.typed.popleft(), None)
            return entry
        return self.infos.setdefault(id(code), entry)  # the entry keeps ``code`` (its id) alive

    # --- records ------------------------------------------------------------------------------
    def open_records(self) -> list[Record]:
        """Every record open or suspended now, on any thread (a snapshot)."""
        records = [rec for _, rec in list(self.suspended.values())]
        for state in _all_states(self):
            records.extend(state.stack)
        return [rec for rec in records if rec[ID]]  # ghosts (ID 0) are nobody's calls

    def end_open_records(self) -> None:
        """End every record still open or suspended (status ``unfinished``), once.

        A suspended generator that was closed without an event (3.13+) ends as ``closed``.
        """
        now = time.perf_counter_ns()
        parked = [rec for _, rec in self.suspended.values()]
        closed = [rec for frame, rec in self.suspended.values()
                  if _CLOSE_EMITS_NO_EVENT and _frame_finished(frame)]
        self.suspended.clear()
        for rec in closed:
            if rec[END] == 0 and rec[ID]:  # ghosts (ID 0) are never written
                rec[STATUS] = "closed"
                self.finish(rec, rec[MARK])
        open_records = list(parked)
        for state in list(_all_states(self)):
            open_records.extend(reversed(state.stack))
            state.stack.clear()
        for rec in open_records:
            if rec[END] == 0 and rec[ID]:
                rec[STATUS] = "unfinished"
                self.finish(rec, now)

    def finish(self, rec: Record, end_ns: int) -> None:
        """Report a record ended outside the fast return path (cold)."""
        rec[END] = end_ns
        if rec[OPEN_CHILDREN]:
            self.sweep_generators(rec)
        if rec[RECORDING]:
            for consumer in self.consumers:
                consumer.on_end(rec)
        rec[ERROR] = None

    def sweep_generators(self, owner: Record) -> None:
        """``owner`` ended: end its suspended generators that were closed without an event.

        Only 3.13+ closes a suspended generator silently (cpython#140373). ``frame.clear()``
        is the probe: there it raises ``RuntimeError`` for a suspended or running frame and
        does nothing harmful to a finished one (on 3.12 it would close the generator, so it is
        never called there). A closed generator ends at its last suspension, the last moment
        it is known to have lived. One still alive is handed to the nearest open ancestor,
        or to ``orphans``, which is swept whenever it has doubled in size, so a generator closed
        after its starter ended still ends (at the latest when tracing stops) and nothing
        piles up.
        """
        kids: dict[int, tuple[FrameType, Record]] | None = owner[OPEN_CHILDREN]
        orphans = self.orphans
        if not kids or not _CLOSE_EMITS_NO_EVENT:  # never probe on 3.12: clear() closes there
            return
        heir: Record | None = None
        for key, entry in list(kids.items()):
            frame, rec = entry
            if _frame_finished(frame):
                kids.pop(key, None)
                current = self.suspended.pop(key, None)
                if current is not entry:  # resumed meanwhile, on another thread
                    if current is not None:
                        self.suspended[key] = current
                    continue
                if rec[END] == 0 and rec[ID]:
                    rec[STATUS] = "closed"
                    self.finish(rec, rec[MARK])
            elif owner[END]:  # still suspended, and its owner has ended
                if heir is None:
                    heir = _open_ancestor(owner) or orphans
                rec[OWNER] = heir
                del kids[key]
                _adopt_parked(heir, key, entry)
        if owner is orphans:
            self.orphan_limit = max(_ORPHAN_SWEEP_AT, 2 * len(kids))
        elif heir is orphans and len(orphans[OPEN_CHILDREN]) > self.orphan_limit:
            self.sweep_generators(orphans)

    def internal_error(self, error: BaseException) -> None:
        """Contain an error raised inside a callback: log once, stop tracing, never re-raise."""
        if isinstance(error, RecursionError):
            return  # the user's own recursion limit; the user's code gets its error next
        self.errors.append(error)
        if len(CONTAINED_ERRORS) < 100:
            CONTAINED_ERRORS.append(error)
        if len(self.errors) == 1:
            log.error("flowtrace_otel: internal error, tracing stopped (your program is "
                      "unaffected): %r", error, exc_info=error)
        if _settings.read("FLOWTRACE_OTEL_DEBUG") == "raise":
            raise error
        try:
            if self.tool_id is not None:
                M.set_events(self.tool_id, 0)
        except Exception:  # pragma: no cover - nothing more we can do
            pass

    # --- the callbacks -----------------------------------------------------------------------
    def _register(self) -> None:
        """Build the callbacks as closures over locals and register them."""
        callbacks = _make_callbacks(self)
        assert self.tool_id is not None
        for event, callback in callbacks.items():
            M.register_callback(self.tool_id, getattr(E, event), callback)


_EVENT_NAMES = ("PY_START", "PY_RETURN", "PY_YIELD", "PY_RESUME", "PY_THROW", "PY_UNWIND",
                "EXCEPTION_HANDLED")


def _all_states(monitor: Monitor) -> list[ThreadState]:
    """Every thread state the hand-off knows of (threads register when first seen)."""
    return list(monitor.handoff.states.values())


def type_name(value: object) -> str:
    """The qualified name of ``value``'s type, without running a metaclass's attribute hooks."""
    name: str = type.__getattribute__(type(value), "__qualname__")
    return name


def _adopt_parked(owner: Record, key: int, entry: tuple[FrameType, Record]) -> None:
    """Add a parked generator to ``owner``'s (made on its first parked child)."""
    kids = owner[OPEN_CHILDREN]
    if kids is None:
        owner[OPEN_CHILDREN] = {key: entry}
    else:
        kids[key] = entry


def _parked_owner(rec: Record, orphans: Record) -> Record:
    """The record that sweeps ``rec`` while it is suspended: never a ghost, which never ends."""
    owner: Record = rec[OWNER] or rec[PARENT] or orphans
    return owner if owner[ID] else orphans


def _open_ancestor(rec: Record) -> Record | None:
    """The nearest ancestor of ``rec`` that has not ended, if any."""
    parent: Record | None = rec[PARENT]
    while parent is not None and (parent[END] or not parent[ID]):  # ghosts never end
        parent = parent[PARENT]
    return parent


def _frame_finished(frame: FrameType) -> bool:
    """True when a generator frame has completed (3.13 clears only a finished frame)."""
    try:
        frame.clear()
    except RuntimeError:
        return False  # suspended or executing: still alive
    return True


def _make_callbacks(mon: Monitor) -> dict[str, Callable[..., Any]]:
    """The seven callbacks; everything they touch is a closure local for fast access."""
    infos_get = mon.infos.get
    learn = mon.learn
    tls = mon.tls
    thread_state = mon.thread_state
    suspended = mon.suspended
    getframe = sys._getframe
    clock = time.perf_counter_ns
    ids = mon._ids
    capture = mon.capture
    capture_args = mon.capture_args
    capture_result = mon.capture_result
    ctx_get = mon.ctx_get
    consumers = tuple(mon.consumers)
    on_ends = tuple(c.on_end for c in consumers)
    on_roots = tuple(c.on_root for c in consumers)
    # a sole consumer may say, as a call starts, that it will not export its values (the bridge
    # when the trace's span budget is spent or the call will be folded): capture is then skipped
    wants_values = getattr(consumers[0], "wants_values", None) if len(consumers) == 1 else None
    internal_error = mon.internal_error
    finish = mon.finish
    handoff = mon.handoff
    orphans = mon.orphans
    sweep_generators = mon.sweep_generators
    sweeps = _CLOSE_EMITS_NO_EVENT  # only 3.13+ closes generators silently

    def args_of(info: CodeInfo, frame: FrameType) -> tuple[tuple[str, str, str], ...]:
        """Capture the arguments of a frame that just started."""
        values = frame.f_locals
        out = []
        for name, kind, secret in info.params:
            if secret:
                out.append((name, "[REDACTED]", kind))
            elif name in values:
                out.append((name, capture(values[name]), kind))
        return tuple(out)

    def py_start(code: CodeType, offset: int) -> Any:
        try:
            entry = infos_get(id(code))
            if entry is None or entry[0] is not code:
                entry = learn(code)
            info = entry[1]
            if info is None:
                return DISABLE
            try:
                state = tls.state
            except AttributeError:
                state = thread_state()
            stack = state.stack
            parent = stack[-1] if stack else state.base
            adopted = unrecorded = None
            if info.special:  # a hand-off hook, or a coroutine that may start a task
                if info.hook is not None:
                    return info.hook.on_start(getframe(1))
                if handoff.pending_tasks:
                    adopted = handoff.task_parent(getframe(1))
                    if adopted is not None:
                        parent = adopted[0]
            if parent is not None and not parent[RECORDING]:  # nobody records this trace
                if (stack or adopted is not None or ctx_get is None
                        or ctx_get() is state.base_ctx):
                    stack.append(info.ghost)
                    return None
                # the first call of a thread handed over by an unrecorded call, under a context
                # attached since (a request span?): the consumers decide, as for a root
                unrecorded, parent = state.base_ctx, None
            ctx = ctx_get() if ctx_get is not None else None  # read once, before on_root
            if parent is not None:
                recording = parent[RECORDING]
                # the fields in index order (INFO, PARENT, ROOT, ID, THREAD, START, END, ...)
                rec = [info, parent, parent[ROOT], next(ids), state, 0, 0, None, None, None,
                       None, None, ctx, None, 0, 0, None, None, None, recording, None, None,
                       None, None, None, None]
            else:
                rec = [info, None, None, next(ids), state, 0, 0, None, None, None,
                       None, None, ctx, None, 0, 0, None, None, None, False, None, None,
                       None, None, None, unrecorded]
                rec[ROOT] = rec
                recording = False
                for on_root in on_roots:
                    recording = on_root(rec) or recording
                rec[RECORDING] = recording
            if adopted is not None:
                rec[TASK] = adopted[2]
            if ctx_get is not None:
                if adopted is not None:
                    rec[DETACHED] = ctx is not adopted[1]
                else:
                    rec[DETACHED] = ctx is not (stack[-1][CTX] if stack else state.base_ctx)
            if recording and wants_values is not None and not wants_values(parent, info):
                rec[RESULT] = NO_VALUES
            elif recording and capture_args and info.params:
                rec[ARGS] = args_of(info, getframe(1))
            stack.append(rec)
            rec[START] = clock()
        except BaseException as error:
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's own
                raise mine  # noqa: B904 - the same exception, going on
            internal_error(error)
        return None

    def py_return(code: CodeType, offset: int, retval: object) -> Any:
        try:
            try:
                stack = tls.state.stack
            except AttributeError:
                stack = None
            if not stack or stack[-1][INFO].code is not code:
                return other_return(code)
            rec = stack.pop()
            if not rec[ID]:
                return None  # a ghost (or a stand-in): nothing to end
            rec[END] = clock()
            rec[STATUS] = "returned"
            if rec[OPEN_CHILDREN]:
                sweep_generators(rec)
            if rec[RECORDING]:
                if capture_result and rec[RESULT] is None:
                    rec[RESULT] = capture(retval)
                for on_end in on_ends:
                    on_end(rec)
        except BaseException as error:
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's own
                raise mine  # noqa: B904 - the same exception, going on
            internal_error(error)
        return None

    def other_return(code: CodeType) -> Any:
        """A return that ends no open record: not user code, a hook, or begun before tracing."""
        entry = infos_get(id(code))
        if entry is None or entry[0] is not code:
            entry = learn(code)
        info = entry[1]
        if info is None:
            return DISABLE
        if info.hook is not None:
            return info.hook.on_end()
        return None  # started before tracing did

    def py_yield(code: CodeType, offset: int, value: object) -> Any:
        try:
            entry = infos_get(id(code))
            if entry is None or entry[0] is not code:
                entry = learn(code)
            info = entry[1]
            if info is None:
                return DISABLE
            if info.hook is not None:
                return DISABLE
            try:
                stack = tls.state.stack
            except AttributeError:
                return None
            if not stack or stack[-1][INFO].code is not code:
                return None
            rec = stack.pop()
            if rec[ID]:  # a ghost keeps no times
                rec[MARK] = clock()
            frame = getframe(1)
            key = id(frame)
            suspended[key] = parked = (frame, rec)
            if sweeps:  # 3.13+: index it under its owner, to be swept when the owner ends
                owner = _parked_owner(rec, orphans)
                kids = owner[OPEN_CHILDREN]
                if kids is None:  # the owner's first parked generator
                    owner[OPEN_CHILDREN] = {key: parked}
                else:
                    kids[key] = parked
                if owner is orphans and len(owner[OPEN_CHILDREN]) > mon.orphan_limit:
                    sweep_generators(orphans)
        except BaseException as error:
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's own
                raise mine  # noqa: B904 - the same exception, going on
            internal_error(error)
        return None

    def resume(code: CodeType, counted: int = 1) -> None:
        """Push a suspended record back when its frame resumes (PY_RESUME or PY_THROW)."""
        key = id(getframe(2))
        hit = suspended.pop(key, None)
        if hit is None:  # started before tracing did (or already ended at a stop)
            untracked_resume(code)
            return
        rec = hit[1]
        if rec[ID]:  # a ghost keeps no times
            rec[SUSPENDED] += clock() - rec[MARK]
            rec[RESUMES] += counted
        if sweeps:
            kids = _parked_owner(rec, orphans)[OPEN_CHILDREN]
            if kids:
                kids.pop(key, None)
        try:
            state = tls.state
        except AttributeError:
            state = thread_state()
        state.stack.append(rec)

    def untracked_resume(code: CodeType) -> None:
        """A generator frame with no record resumes; shield a traced call of the same code.

        Its yield, return or unwind would otherwise pop the traced record on top of the stack
        (matched by code). A hidden stand-in record (never reported, and its calls neither)
        takes those events instead. Only when the top is of the same code: otherwise nothing
        can be confused and its calls stay visible under the traced caller.
        """
        try:
            stack = tls.state.stack
        except AttributeError:
            return
        if stack and stack[-1][INFO].code is code:
            top = stack[-1]
            stand_in: Record = [None] * _FIELDS
            stand_in[INFO], stand_in[PARENT], stand_in[ROOT] = top[INFO], top, top[ROOT]
            stand_in[ID], stand_in[THREAD], stand_in[RECORDING] = 0, top[THREAD], False
            stand_in[START] = stand_in[END] = stand_in[SUSPENDED] = stand_in[RESUMES] = 0
            stack.append(stand_in)

    def py_resume(code: CodeType, offset: int) -> Any:
        try:
            entry = infos_get(id(code))
            if entry is None or entry[0] is not code:
                entry = learn(code)
            info = entry[1]
            if info is None or info.hook is not None:
                return DISABLE
            resume(code)
        except BaseException as error:
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's own
                raise mine  # noqa: B904 - the same exception, going on
            internal_error(error)
        return None

    def py_throw(code: CodeType, offset: int, exc: BaseException) -> Any:
        try:
            entry = infos_get(id(code))
            if entry is None or entry[0] is not code:
                entry = learn(code)
            if entry[1] is not None and entry[1].hook is None:
                # close() throws GeneratorExit: not a resumption the program asked for (and
                # 3.13 closes most suspended generators without any event)
                resume(code, type(exc) is not GeneratorExit)
        except BaseException as error:
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's own
                raise mine  # noqa: B904 - the same exception, going on
            internal_error(error)
        return None  # never DISABLE: that would replace the user's exception

    def py_unwind(code: CodeType, offset: int, exc: BaseException) -> Any:
        try:
            entry = infos_get(id(code))
            if entry is None or entry[0] is not code:
                entry = learn(code)
            info = entry[1]
            if info is None:
                return None
            if info.hook is not None:
                info.hook.on_end()
                return None
            now = clock()
            try:
                stack = tls.state.stack
            except AttributeError:
                return None
            if not stack or stack[-1][INFO].code is not code:
                return None
            rec = stack.pop()
            if not rec[ID]:
                return None  # a ghost (or a stand-in): nothing to end
            parent = rec[PARENT]
            if type(exc) is GeneratorExit:
                rec[STATUS] = "closed"
            else:
                rec[STATUS] = "raised"
                if rec[RECORDING]:
                    rec[EXC] = text = (type_name(exc), exception_message(exc, capture), id(exc))
                    rec[EXC_STATE] = "propagated"
                    rec[ERROR] = exc
                    passed_through(rec, text)
            rec[LAST_RAISED] = None
            finish(rec, now)
            if parent is not None and rec[EXC] is not None:
                parent[LAST_RAISED] = rec  # "caught" if the parent handles this exception
        except BaseException as error:
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's own
                raise mine  # noqa: B904 - the same exception, going on
            internal_error(error)
        return None

    def exception_handled(code: CodeType, offset: int, exc: BaseException) -> Any:
        try:
            entry = infos_get(id(code))
            if entry is None or entry[0] is not code:
                entry = learn(code)
            info = entry[1]
            if info is None or info.hook is not None:
                return None
            try:
                stack = tls.state.stack
            except AttributeError:
                return None
            if not stack or stack[-1][INFO].code is not code:
                return None
            rec = stack[-1]
            if not rec[RECORDING]:
                return None
            text = (type_name(exc), exception_message(exc, capture))
            if rec[CAUGHT] is None:
                rec[CAUGHT] = [text]
            elif len(rec[CAUGHT]) < 16:
                rec[CAUGHT].append(text)
            child = rec[LAST_RAISED]
            if child is not None and child[EXC][2] == id(exc):
                # kept linked: a finally, with or except-raise handler lets it go on, and then
                # passed_through() turns it back to "propagated" when it leaves this call
                child[EXC_STATE] = "caught"
        except BaseException as error:
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's own
                raise mine  # noqa: B904 - the same exception, going on
            internal_error(error)
        return None

    def passed_through(rec: Record, text: tuple[str, str, int]) -> None:
        """``rec`` is unwinding with an exception: handlers that saw it only let it go on."""
        child = rec[LAST_RAISED]
        if child is not None and child[EXC][2] == text[2]:
            child[EXC_STATE] = "propagated"
        caught = rec[CAUGHT]
        while caught and caught[-1] == text[:2]:
            caught.pop()  # seen by a finally/with/except-raise handler, not handled

    return {
        "PY_START": py_start, "PY_RETURN": py_return, "PY_YIELD": py_yield,
        "PY_RESUME": py_resume, "PY_THROW": py_throw, "PY_UNWIND": py_unwind,
        "EXCEPTION_HANDLED": exception_handled,
    }
