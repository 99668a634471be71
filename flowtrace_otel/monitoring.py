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
  task's first call gets the right parent. The hand-offs consume this monitor through
  :class:`~flowtrace_otel.monitor_protocol.CallMonitor` (``open_call``, ``adopt``,
  ``release``); it calls them back only through the ``HandOffs`` protocol the core installs
  (:func:`flowtrace_otel.core.new_monitor`): this module never imports them.
* A record is a :class:`~flowtrace_otel.records.Record` (named, typed fields; built with
  ``object.__new__`` and one store per field, see its module for the cost). Finished records
  go to the consumer's ``on_end``.
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
from typing import Any

from flowtrace_otel import _settings
from flowtrace_otel.capture import Capturer, exception_message
from flowtrace_otel.filters import CodeFilter
from flowtrace_otel.interrupts import program_exception
from flowtrace_otel.monitor_protocol import Consumer, Disposition, HandOffHook, HandOffs
from flowtrace_otel.records import MAX_RUN_MARKS, NO_VALUES, CodeInfo, Record, ThreadState

log = logging.getLogger("flowtrace_otel")
M = sys.monitoring
E = M.events
DISABLE = M.DISABLE
#: the exception events: they cannot be DISABLEd, and before Python 3.15 (gh-142186) they
#: cannot be enabled per code object either, so on 3.12-3.14 library code's exceptions reach
#: the callbacks (each costs one cache lookup there, and is counted in ``foreign_exceptions``)
EXCEPTION_EVENTS = E.PY_THROW | E.PY_UNWIND | E.EXCEPTION_HANDLED
EVENTS = E.PY_START | E.PY_RETURN | E.PY_YIELD | E.PY_RESUME | EXCEPTION_EVENTS
TOOL_NAME = "flowtrace_otel"
FREE_TOOL_IDS = (3, 4)
_CLOSE_EMITS_NO_EVENT = sys.version_info >= (3, 13)  # cpython#140373
_ORPHAN_SWEEP_AT = 256  # suspended generators nobody sweeps, before a sweep of them all
_TYPED_CACHED = 512  # typed or exec'd code objects kept in the cache (each keeps one alive)

class _NoHandOffs:
    """Hand-offs of a monitor nobody wired (the core installs the real ones before start)."""

    pending_tasks: dict[int, Any] = {}  # noqa: RUF012 - never written: always empty
    child_env: Callable[[], dict[str, str]] | None = None
    child_flush: Callable[[], None] | None = None

    def hook_for(self, code: CodeType) -> HandOffHook | None:
        """No function is watched."""
        return None

    def task_parent(self, frame: FrameType) -> tuple[Record, object, str | None] | None:
        """No task is pending."""
        return None


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


def _orphans() -> None:
    """Stands for the owner of suspended generators that no open call sweeps (never called)."""


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
        self.orphans = Record.blank(CodeInfo(_orphans.__code__, ()))
        self.orphan_limit = _ORPHAN_SWEEP_AT
        self.tls = threading.local()
        self.errors: list[BaseException] = []
        self.ctx_get: Callable[[], object] | None = None
        self.epoch_offset_ns = time.time_ns() - time.perf_counter_ns()
        self._ids = iter(range(1, sys.maxsize))
        #: exception events are enabled per traced code object, not globally (3.15+)
        self.local_exceptions = False
        #: exception events (PY_THROW, PY_UNWIND, EXCEPTION_HANDLED) of code that is not
        #: traced that reached the callbacks: a debug counter (always 0 with local_exceptions)
        self._foreign = [0]
        #: every thread's state, by thread id (a thread registers when first seen)
        self.states: dict[int, ThreadState] = {}
        self.handoff: HandOffs = _NoHandOffs()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, order: tuple[int, ...] = FREE_TOOL_IDS) -> None:
        """Claim a tool id (the first free in ``order``), register the callbacks, switch on.

        Where the interpreter lets exception events be enabled per code object, they are
        enabled on each traced code object as it is decided (:meth:`learn`), never globally:
        library code's exceptions then never call into the tracer.
        """
        self.tool_id = claim_tool_id(order)
        self.local_exceptions = local_exception_events(self.tool_id)
        self._register()
        M.set_events(self.tool_id,
                     EVENTS & ~EXCEPTION_EVENTS if self.local_exceptions else EVENTS)

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
            self.states[state.ident] = state
        return state

    def current(self) -> tuple[Record | None, object]:
        """The innermost open record of this thread/task and the context expected with it."""
        state = self.thread_state()
        if state.stack:
            top = state.stack[-1]
            return top, top.ctx
        return state.base, state.base_ctx

    def open_call(self) -> Record | None:
        """The innermost call open on this thread's own stack (never an adopted parent)."""
        stack = self.thread_state().stack
        return stack[-1] if stack else None

    def thread_calls(self) -> list[Record]:
        """This thread's adopted parent (if any) and its open calls, outermost first."""
        try:
            state: ThreadState = self.tls.state
        except AttributeError:
            return []
        calls = [state.base] if state.base is not None else []
        return [*calls, *state.stack]

    def adopt(self, parent: Record | None, ctx: object, thread_name: str | None = None) -> None:
        """Make ``parent`` (handed over with context ``ctx``) this thread's base parent."""
        state = self.thread_state()
        if thread_name is not None:
            state.name = thread_name
        state.base = parent
        state.base_ctx = ctx

    def release(self, thread_ends: bool) -> None:
        """This thread's hand-over ended; ``thread_ends``: forget the thread if nothing is open."""
        state = self.thread_state()
        state.base = None
        state.base_ctx = None
        if thread_ends and not state.stack and self.states.get(state.ident) is state:
            del self.states[state.ident]  # the thread is about to exit (its id may be reused)

    @property
    def foreign_exceptions(self) -> int:
        """Exception events of code that is not traced that called into the tracer so far."""
        return self._foreign[0]

    def disposition(self, code: CodeType) -> Disposition | None:
        """What was decided for ``code``, without deciding (None: not met yet)."""
        entry = self.infos.get(id(code))
        if entry is None or entry[0] is not code:
            return None
        info = entry[1]
        if info is None:
            return "ignored"
        return "traced" if info.hook is None else "hook"

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
        if info is not None and self.local_exceptions and self.tool_id is not None:
            M.set_local_events(self.tool_id, code, EXCEPTION_EVENTS)
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
        return [rec for rec in records if rec.id]  # ghosts (ID 0) are nobody's calls

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
            if rec.end == 0 and rec.id:  # ghosts (ID 0) are never written
                rec.status = "closed"
                self.finish(rec, rec._mark)
        open_records = list(parked)
        for state in list(_all_states(self)):
            open_records.extend(reversed(state.stack))
            state.stack.clear()
        for rec in open_records:
            if rec.end == 0 and rec.id:
                rec.status = "unfinished"
                self.finish(rec, now)

    def finish(self, rec: Record, end_ns: int) -> None:
        """Report a record ended outside the fast return path (cold)."""
        rec.end = end_ns
        if rec._kids:
            self.sweep_generators(rec)
        if rec.recording:
            for consumer in self.consumers:
                consumer.on_end(rec)
        rec.error = None

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
        kids: dict[int, tuple[FrameType, Record]] | None = owner._kids
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
                if rec.end == 0 and rec.id:
                    rec.status = "closed"
                    self.finish(rec, rec._mark)
            elif owner.end:  # still suspended, and its owner has ended
                if heir is None:
                    heir = _open_ancestor(owner) or orphans
                rec._owner = heir
                del kids[key]
                _adopt_parked(heir, key, entry)
        if owner is orphans:
            self.orphan_limit = max(_ORPHAN_SWEEP_AT, 2 * len(kids))
        elif heir is orphans and len(orphans._kids or ()) > self.orphan_limit:
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
        self._register_callbacks(_make_callbacks(self))

    def _register_callbacks(self, callbacks: dict[str, Callable[..., Any]]) -> None:
        """Register ``callbacks`` by event name (the native core puts C ones in front)."""
        assert self.tool_id is not None
        for event, callback in callbacks.items():
            M.register_callback(self.tool_id, getattr(E, event), callback)


_EVENT_NAMES = ("PY_START", "PY_RETURN", "PY_YIELD", "PY_RESUME", "PY_THROW", "PY_UNWIND",
                "EXCEPTION_HANDLED")


def _probe() -> None:
    """A code object to ask the interpreter about local exception events (never called)."""


def local_exception_events(tool_id: int) -> bool:
    """True when exception events can be enabled per code object (Python 3.15+, gh-142186).

    Asked of the interpreter, not of its version: 3.12-3.14 refuse with ``ValueError``
    ("invalid local event set").
    """
    try:
        M.set_local_events(tool_id, _probe.__code__, EXCEPTION_EVENTS)
    except ValueError:
        return False
    M.set_local_events(tool_id, _probe.__code__, 0)
    return True


def _all_states(monitor: Monitor) -> list[ThreadState]:
    """Every thread state (threads register when first seen)."""
    return list(monitor.states.values())


def type_name(value: object) -> str:
    """The qualified name of ``value``'s type, without running a metaclass's attribute hooks."""
    name: str = type.__getattribute__(type(value), "__qualname__")
    return name


def _adopt_parked(owner: Record, key: int, entry: tuple[FrameType, Record]) -> None:
    """Add a parked generator to ``owner``'s (made on its first parked child)."""
    kids = owner._kids
    if kids is None:
        owner._kids = {key: entry}
    else:
        kids[key] = entry


def _parked_owner(rec: Record, orphans: Record) -> Record:
    """The record that sweeps ``rec`` while it is suspended: never a ghost, which never ends."""
    owner: Record = rec._owner or rec.parent or orphans
    return owner if owner.id else orphans


def _open_ancestor(rec: Record) -> Record | None:
    """The nearest ancestor of ``rec`` that has not ended, if any."""
    parent: Record | None = rec.parent
    while parent is not None and (parent.end or not parent.id):  # ghosts never end
        parent = parent.parent
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
    new_record = object.__new__
    foreign = mon._foreign
    ids = mon._ids
    capture = mon.capture
    capture_value = capture.call  # the C twin itself when it renders: no Python frame
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
                out.append((name, capture_value(values[name]), kind))
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
            adopted = None
            if info.special:  # a hand-off hook, or a coroutine that may start a task
                if info.hook is not None:
                    return info.hook.on_start(getframe(1))
                if handoff.pending_tasks:
                    adopted = handoff.task_parent(getframe(1))
                    if adopted is not None:
                        parent = adopted[0]
            if parent is not None and not parent.recording:  # nobody records this trace
                if (stack or adopted is not None or ctx_get is None
                        or ctx_get() is state.base_ctx):
                    stack.append(info.ghost)
                    return None
                # the first call of a thread handed over by an unrecorded call, under a context
                # attached since (a request span?): the consumers decide, as for a root
                parent = None
            ctx = ctx_get() if ctx_get is not None else None  # read once, before on_root
            # every field is stored: an unset slot would raise on reading (Record's docstring
            # says why a slots object and what it costs)
            rec = new_record(Record)
            rec.info = info
            rec.parent = parent
            rec.id = next(ids)
            rec.thread = state
            rec.start = rec.end = rec.suspended = rec.resumes = rec._mark = 0
            rec.args = rec.result = rec.exc = rec.exc_state = rec.caught = rec.error = None
            rec.runs = rec.task = rec.ext = rec.status = None
            rec._kids = rec._last_raised = rec._owner = None
            rec.ctx = ctx
            if adopted is not None:
                rec.outer_ctx = adopted[1]
                rec.task = adopted[2]
            else:  # the caller's, else the hand-over's (a thread's first call, a root)
                rec.outer_ctx = stack[-1].ctx if stack else state.base_ctx
            if parent is not None:
                rec.root = parent.root
                rec.recording = recording = parent.recording
            else:
                rec.root = rec
                rec.recording = recording = False
                for on_root in on_roots:
                    recording = on_root(rec) or recording
                rec.recording = recording
            if recording and wants_values is not None and not wants_values(parent, info):
                rec.result = NO_VALUES
            elif recording and capture_args and info.params:
                rec.args = args_of(info, getframe(1))
            stack.append(rec)
            rec.start = clock()
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
            if not stack or stack[-1].info.code is not code:
                return other_return(code)
            rec = stack.pop()
            if not rec.id:
                return None  # a ghost (or a stand-in): nothing to end
            rec.end = clock()
            rec.status = "returned"
            if rec._kids:
                sweep_generators(rec)
            if rec.recording:
                if capture_result and rec.result is None:
                    rec.result = capture_value(retval)
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
            if not stack or stack[-1].info.code is not code:
                return None
            rec = stack.pop()
            if rec.id:  # a ghost keeps no times
                rec._mark = now = clock()
                runs = rec.runs
                if runs is None:
                    rec.runs = [now]
                elif len(runs) < MAX_RUN_MARKS:
                    runs.append(now)
            frame = getframe(1)
            key = id(frame)
            suspended[key] = parked = (frame, rec)
            if sweeps:  # 3.13+: index it under its owner, to be swept when the owner ends
                owner = _parked_owner(rec, orphans)
                kids = owner._kids
                if kids is None:  # the owner's first parked generator
                    owner._kids = {key: parked}
                else:
                    kids[key] = parked
                if owner is orphans and len(owner._kids or ()) > mon.orphan_limit:
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
        if rec.id:  # a ghost keeps no times
            now = clock()
            rec.suspended += now - rec._mark
            rec.resumes += counted
            runs = rec.runs
            if runs is not None and len(runs) % 2:  # its suspension was kept: keep the resume
                runs.append(now)
        if sweeps:
            kids = _parked_owner(rec, orphans)._kids
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
        if stack and stack[-1].info.code is code:
            top = stack[-1]
            stack.append(Record.blank(top.info, top))

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
            info = entry[1]
            if info is None:
                foreign[0] += 1
            elif info.hook is None:
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
                foreign[0] += 1
                return None
            if info.hook is not None:
                info.hook.on_end()
                return None
            now = clock()
            try:
                stack = tls.state.stack
            except AttributeError:
                return None
            if not stack or stack[-1].info.code is not code:
                return None
            rec = stack.pop()
            if not rec.id:
                return None  # a ghost (or a stand-in): nothing to end
            parent = rec.parent
            if type(exc) is GeneratorExit:
                rec.status = "closed"
            else:
                rec.status = "raised"
                if rec.recording:
                    rec.exc = text = (type_name(exc), exception_message(exc, capture), id(exc))
                    rec.exc_state = "propagated"
                    rec.error = exc
                    passed_through(rec, text)
            rec._last_raised = None
            finish(rec, now)
            if parent is not None and rec.exc is not None:
                parent._last_raised = rec  # "caught" if the parent handles this exception
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
            if info is None:
                foreign[0] += 1
                return None
            if info.hook is not None:
                return None
            try:
                stack = tls.state.stack
            except AttributeError:
                return None
            if not stack or stack[-1].info.code is not code:
                return None
            rec = stack[-1]
            if not rec.recording:
                return None
            text = (type_name(exc), exception_message(exc, capture))
            if rec.caught is None:
                rec.caught = [text]
            elif len(rec.caught) < 16:
                rec.caught.append(text)
            child = rec._last_raised
            if child is not None and child.exc is not None and child.exc[2] == id(exc):
                # kept linked: a finally, with or except-raise handler lets it go on, and then
                # passed_through() turns it back to "propagated" when it leaves this call
                child.exc_state = "caught"
        except BaseException as error:
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's own
                raise mine  # noqa: B904 - the same exception, going on
            internal_error(error)
        return None

    def passed_through(rec: Record, text: tuple[str, str, int]) -> None:
        """``rec`` is unwinding with an exception: handlers that saw it only let it go on."""
        child = rec._last_raised
        # the id alone is not enough: the child's exception may be gone (handled by a with
        # block) and this one reuse its address
        if (child is not None and child.exc is not None and child.exc[2] == text[2]
                and child.exc[0] == text[0]):
            child.exc_state = "propagated"
        caught = rec.caught
        while caught and caught[-1] == text[:2]:
            caught.pop()  # seen by a finally/with/except-raise handler, not handled

    return {
        "PY_START": py_start, "PY_RETURN": py_return, "PY_YIELD": py_yield,
        "PY_RESUME": py_resume, "PY_THROW": py_throw, "PY_UNWIND": py_unwind,
        "EXCEPTION_HANDLED": exception_handled,
    }
