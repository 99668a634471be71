"""Sessions: who is listening to the monitors, and FlowTrace's API on top of that.

Sessions (and the OpenTelemetry bridge) attach to a monitor
(:class:`~flowtrace_otel.monitor_protocol.CallMonitor`, of the core chosen when it starts) as
consumers. Consumers with the same monitor options (filter and capture) share one monitor; other
options get a monitor of their own on the other free ``sys.monitoring`` tool id, so two
option sets trace side by side, each with its own view of the same calls. An outer tool
(``flowtrace-otel run``, ``FLOWTRACE_OTEL=1``) attaches as a *tool*: the program's own use of
the API (``TraceSession``, ``start_tracing``, ``@trace``) behaves as if it were not there.
"""

from __future__ import annotations

import contextlib
import functools
import importlib._bootstrap
import inspect
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, overload

from flowtrace_otel._options import Options, check_names, options_from_env, warn_once
from flowtrace_otel.capture import Capturer
from flowtrace_otel.core import new_monitor
from flowtrace_otel.events import CallEvent, folded_event, gc_paused, to_event
from flowtrace_otel.filters import CodeFilter, Counts, counts_of, why_nothing_recorded
from flowtrace_otel.folding import Siblings
from flowtrace_otel.monitor_protocol import CallMonitor, Consumer
from flowtrace_otel.monitoring import FREE_TOOL_IDS, ToolIdTaken
from flowtrace_otel.records import Record

#: options that shape what the monitor records (the rest only shape output)
MONITOR_OPTIONS = ("include", "exclude", "capture_args", "capture_result", "max_repr",
                   "max_items", "full_repr", "redact")


class TracingConflict(RuntimeError):
    """The program asked for a third set of monitor options while two are tracing."""


FilterKey = tuple[tuple[str, ...], ...]


class _Running:
    """One monitor (one ``sys.monitoring`` tool id), its options and its consumers."""

    def __init__(self, monitor: CallMonitor, options: Options) -> None:
        self.monitor = monitor
        self.options = options
        self.consumers: list[Consumer] = []
        #: ids of the consumers started by an outer tool (``flowtrace-otel run``,
        #: ``FLOWTRACE_OTEL=1``), which the program must not be able to see
        self.tools: set[int] = set()

    def differing(self, options: Options) -> list[str]:
        """The names of the monitor options that differ from ``options``."""
        return [name for name in MONITOR_OPTIONS
                if getattr(options, name) != getattr(self.options, name)]


class _Registry:
    """The running monitors and their consumers.

    Consumers asking for the same monitor options share one monitor. Different options get a
    monitor of their own on the other free tool id (3 or 4), so a program's own session keeps
    its filter and capture view under an outer tool (``flowtrace-otel run``,
    ``FLOWTRACE_OTEL=1``), and nothing calls ``sys.monitoring.restart_events()`` while they
    coexist. ``DISABLE`` outlives a tool id, so a monitor prefers an id last used with its
    own filter (or never used); only a new filter on an id used before with another one
    restarts events.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.running: list[_Running] = []
        self.last_filter: dict[int, FilterKey] = {}

    @property
    def monitor(self) -> CallMonitor | None:
        """The first running monitor (the only one unless options differ), or None."""
        return self.running[0].monitor if self.running else None

    @property
    def consumers(self) -> list[Consumer]:
        """Every attached consumer, of every monitor."""
        return [consumer for running in self.running for consumer in running.consumers]

    def attach(self, consumer: Consumer, options: Options,
               ctx_get: Callable[[], object] | None = None, tool: bool = False) -> CallMonitor:
        """Add ``consumer`` to a monitor with ``options``, starting one if none runs.

        ``tool``: the consumer belongs to an outer tool, not to the traced program.
        """
        with self.lock:
            running = next((r for r in self.running if not r.differing(options)), None)
            if running is None:
                try:
                    running = self._start(options, ctx_get, consumer)
                except ToolIdTaken as taken:
                    running = self._share_with_tool(options, taken)
            if consumer not in running.consumers:
                if ctx_get is not None:
                    running.monitor.ctx_get = ctx_get
                running.monitor.set_consumers([*running.consumers, consumer])
                running.consumers.append(consumer)
            if tool:
                running.tools.add(id(consumer))
            return running.monitor

    def _start(self, options: Options, ctx_get: Callable[[], object] | None,
               consumer: Consumer) -> _Running:
        """A new monitor for ``consumer`` with ``options`` on a free tool id (or ToolIdTaken)."""
        code_filter = CodeFilter(options.include, options.exclude)
        key = code_filter.key()
        monitor = new_monitor(
            code_filter,
            Capturer(options.max_repr, options.max_items, options.full_repr, options.redact),
            options.capture_args, options.capture_result, options.redact,
        )
        monitor.ctx_get = ctx_get
        monitor.set_consumers([consumer])
        # an id never used, or last used with this filter, has no stale DISABLE for it
        clean = [i for i in FREE_TOOL_IDS if self.last_filter.get(i, key) == key]
        monitor.start(tuple(clean) + tuple(i for i in FREE_TOOL_IDS if i not in clean))
        assert monitor.tool_id is not None
        if self.last_filter.get(monitor.tool_id, key) != key:
            # DISABLE outlives the tool id: code left out by that id's previous filter
            # would stay silent for this one
            sys.monitoring.restart_events()
        self.last_filter[monitor.tool_id] = key
        running = _Running(monitor, options)
        running.consumers.append(consumer)
        self.running.append(running)
        return running

    def _share_with_tool(self, options: Options, taken: ToolIdTaken) -> _Running:
        """No tool id left: share an outer tool's monitor, unless the program holds both ids.

        Untraced, a program gets both ids: its third set of options at once is refused. Under
        an outer tool holding one id, its second set shares the tool's monitor instead, and
        sees the tool's filter and capture limits (a documented limit).
        """
        programs = [r for r in self.running if len(r.tools) < len(r.consumers)]
        if len(programs) < len(FREE_TOOL_IDS):
            for running in self.running:
                if running.tools:
                    return running
            raise taken  # another tool (a debugger, a profiler) holds the id
        names = sorted({name for r in self.running for name in r.differing(options)})
        raise TracingConflict(
            "flowtrace_otel is already tracing with two other sets of options (at most two "
            f"can run at once); differing: {', '.join(names)}; stop one first or use the same "
            "options"
        )

    def detach(self, consumer: Consumer) -> None:
        """Remove ``consumer``; a monitor's last consumer out stops it (ending open calls)."""
        with self.lock:
            running = next((r for r in self.running if consumer in r.consumers), None)
            if running is None:
                return
            running.consumers.remove(consumer)
            running.tools.discard(id(consumer))
            monitor = running.monitor
            if running.consumers:
                monitor.set_consumers(list(running.consumers))
                return
            self.running.remove(running)  # removed first: a failing stop cannot leak it
            try:
                monitor.stop()  # frees the tool id, then reports open calls as "unfinished"
            except Exception as error:  # a consumer failed on an open call: contain it
                monitor.internal_error(error)

    def active(self) -> bool:
        """True while the program traces (a session, ``@trace`` or its own bridge).

        An outer tool's tracing (``flowtrace-otel run``, ``FLOWTRACE_OTEL=1``) does not count:
        the program behaves as it would untraced.
        """
        return any(len(r.tools) < len(r.consumers) for r in self.running)

    def tracing(self) -> bool:
        """True while anything traces, outer tools included."""
        return bool(self.running)


registry = _Registry()
_defaults = Options()
_last_events: list[CallEvent] = []


class _Pending:
    """Calls under one parent that ended while the parent runs (or the top level of a session).

    Records are kept as they are and converted to events only when the session stops: the
    recording path stays as cheap as appending a record, and a call's exception state
    (caught or propagated) is final by then.
    """

    __slots__ = ("calls", "fold_events", "kept", "siblings")

    def __init__(self, keep: int) -> None:
        self.siblings = Siblings(keep)
        #: kept children and their kept descendants (records), and the folds under them (events)
        self.kept: list[Record | CallEvent] = []
        self.fold_events: dict[object, CallEvent] = {}
        self.calls = 0  # calls below the parent: kept and folded, at any depth


_TOP, _IMPORTS = 0, -1  # keys of the session's top level: calls at run time, and under imports
_IMPORT_CODE = importlib._bootstrap._call_with_frames_removed.__code__  # type: ignore[attr-defined]


def _under_import() -> bool:
    """True while an import runs a module body somewhere up this thread's stack."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is _IMPORT_CODE:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class TraceSession:
    """The core object: records every user-code call while active.

    ``with TraceSession() as s: ...`` then ``s.events``; or ``start()`` / ``stop()``.

    Memory stays bounded however long the program runs: under one parent, the first
    ``record_fold_after`` calls of each function are kept in detail and the rest are folded
    into one aggregate event (see :mod:`flowtrace_otel.folding`); once ``max_events`` calls
    are kept, every further call is folded unless calls inside it were kept (the path to them
    stays). ``0`` turns either limit off.
    """

    #: on :meth:`stop` with no calls recorded, say why on stderr (one line)
    explain_empty = True

    def __init__(self, *, record_fold_after: int = 1000, max_events: int = 20_000,
                 **options: Any) -> None:
        """Validate ``options`` over the configured defaults (unknown names raise)."""
        check_names(options)
        self.options = _defaults.replace(**options)
        self.record_fold_after = record_fold_after
        self.max_events = max_events
        self.on_end: Callable[[Record], None] = self._on_end
        self.events: list[CallEvent] = []
        self._monitor: CallMonitor | None = None
        self._left_out_at_start: Counts = {}
        self._reset()

    def _reset(self) -> None:
        """Empty recording state."""
        self._offset: int | None = None
        self._pending: dict[int, _Pending] = {}    # by parent record id (and _TOP, _IMPORTS)
        self._import_roots: set[int] = set()       # ids of outermost calls begun by an import
        self._kept = 0

    def on_root(self, record: Record) -> bool:
        """Every trace is recorded by a session; note the ones begun by an import."""
        if _under_import():
            self._import_roots.add(record.id)
        return True

    def _epoch_offset(self) -> int:
        """The monitor's clock offset (known once :meth:`start` returned, or from the registry)."""
        offset = self._offset
        if offset is None:
            monitor = registry.monitor
            offset = (monitor.epoch_offset_ns if monitor is not None
                      else time.time_ns() - time.perf_counter_ns())
        return offset

    def _on_end(self, rec: Record) -> None:
        """Keep or fold a finished call (streaming; children end before their parent)."""
        rid = rec.id
        node = self._pending.pop(rid, None)
        parent = rec.parent
        if parent is not None:
            key = parent.id
        elif rid in self._import_roots:
            key = _IMPORTS
        else:
            key = _TOP
        above = self._pending.get(key)
        if above is None:
            above = self._pending.setdefault(key, _Pending(self.record_fold_after))
        inside = node.calls if node is not None else 0
        above.calls += 1 + inside
        info = rec.info
        raised = rec.status == "raised" and rec.exc is not None
        within = (not self.max_events or self._kept < self.max_events
                  or (node is not None and bool(node.kept)))  # kept calls inside: the path stays
        if within and above.siblings.admit(info, raised):
            self._kept += 1
            if node is not None:
                below = node.kept
                below.extend(node.fold_events.values())  # they go (or are dropped) with it
                if len(below) > len(above.kept):  # the larger list absorbs the smaller
                    below.extend(above.kept)
                    above.kept = below
                else:
                    above.kept.extend(below)
            above.kept.append(rec)
            return
        if parent is None:
            self._import_roots.discard(rid)
        fold, new = above.siblings.fold(info)
        fold.add(rec.end - rec.start, inside, raised)
        if new:
            first = to_event(rec, self._epoch_offset())
            first.import_time = key == _IMPORTS
            above.fold_events[info] = folded_event(first, fold)
        else:
            event = above.fold_events[info]
            event.end_ns = max(event.end_ns, rec.end + self._epoch_offset())

    @property
    def active(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._monitor is not None

    def start(self) -> TraceSession:
        """Start recording; returns ``self``."""
        if self._monitor is not None:
            raise RuntimeError("this TraceSession is already started")
        return self._attach(tool=False)

    def start_for_tool(self) -> TraceSession:
        """:meth:`start` for an outer tool (the CLI): invisible to the program's own API calls."""
        if self._monitor is not None:
            raise RuntimeError("this TraceSession is already started")
        return self._attach(tool=True)

    def _attach(self, tool: bool) -> TraceSession:
        """Attach to a monitor with this session's options."""
        self._reset()
        self._monitor = registry.attach(self, self.options, tool=tool)
        self._offset = self._monitor.epoch_offset_ns
        self._left_out_at_start = counts_of(self._monitor.filter)
        return self

    def stop(self) -> list[CallEvent]:
        """Stop recording and return the calls as :class:`CallEvent` objects, in start order."""
        global _last_events
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return self.events
        registry.detach(self)
        with gc_paused():
            self.events = self._collect(monitor.epoch_offset_ns, final=True)
        self._reset()
        _last_events = self.events
        if not self.events and self.explain_empty:
            _explain_empty(monitor, self._left_out_at_start)
        return self.events

    def _collect(self, offset: int, final: bool) -> list[CallEvent]:
        """Every kept call and fold as events, in start order (``final``: for the last time)."""
        imports = self._import_roots
        events: list[CallEvent] = []
        for node in list(self._pending.values()):
            for item in list(node.kept):
                if isinstance(item, CallEvent):  # a fold under a kept call
                    events.append(item)
                    continue
                event = to_event(item, offset)
                root = item.root
                event.import_time = root is not None and root.id in imports
                events.append(event)
            events.extend(node.fold_events.values())
        if final:
            self._pending.clear()
        events.sort(key=lambda event: event.id)
        return events

    def finished(self) -> list[CallEvent]:
        """The calls that have ended so far, while the session keeps recording."""
        if self._monitor is None:
            return list(self.events)
        return self._collect(self._monitor.epoch_offset_ns, final=False)

    def __repr__(self) -> str:
        """A short state line, quiet at a prompt: ``<TraceSession: tracing, 3 calls so far>``."""
        if self._monitor is not None:
            return f"<TraceSession: tracing, {self._kept} calls so far>"
        return f"<TraceSession: stopped, {len(self.events)} calls>"

    def __enter__(self) -> TraceSession:
        """Start on entering the block."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop on leaving the block, whatever happened in it."""
        self.stop()


def _explain_empty(monitor: CallMonitor, left_out_at_start: Counts) -> None:
    """One line on stderr: why a session recorded nothing, and which option would change it."""
    if sys.stderr is None:  # pythonw: print(file=None) would write to stdout
        return
    try:
        print(why_nothing_recorded(monitor.filter, left_out_at_start), file=sys.stderr)
    except (OSError, ValueError, AttributeError):
        pass  # stderr closed or replaced by something without write: nothing to tell it with


_default_session: TraceSession | None = None


def start_tracing(**options: Any) -> TraceSession:
    """Start the default session (FlowTrace's high-level API)."""
    global _default_session
    if _default_session is not None and _default_session.active:
        raise RuntimeError("tracing is already started; call stop_tracing() first")
    _default_session = TraceSession(**options).start()
    return _default_session


def stop_tracing() -> list[CallEvent]:
    """Stop the default session and return its events (empty if it was not started)."""
    global _default_session
    session, _default_session = _default_session, None
    return session.stop() if session is not None else []


def get_trace_data() -> list[CallEvent]:
    """The calls finished so far by ``start_tracing()``'s session, else the last stopped one's."""
    session = _default_session
    if session is not None and session.active:
        return session.finished()
    return list(_last_events)


def config(**options: Any) -> None:
    """Set default options for later sessions, ``@trace`` and the CLI (unknown names raise)."""
    global _defaults
    _defaults = _defaults.replace(**options)


def get_config() -> dict[str, Any]:
    """The current default options as a dict."""
    return {name: getattr(_defaults, name) for name in Options.__dataclass_fields__}


def reset_config() -> None:
    """Back to the documented defaults plus ``FLOWTRACE_OTEL_*`` from the environment."""
    global _defaults
    _defaults = options_from_env(base=Options())


@contextlib.contextmanager
def active_tracing(**options: Any) -> Iterator[TraceSession]:
    """Trace the ``with`` block; the session's ``events`` are filled when it ends."""
    session = TraceSession(**options).start()
    try:
        yield session
    finally:
        session.stop()


_SHOW = ("show_args", "show_result", "show_timing", "show_exc")


@overload
def trace[F: Callable[..., Any]](func: F) -> F: ...
@overload
def trace[F: Callable[..., Any]](
    *, show_args: bool = ..., show_result: bool = ..., show_timing: bool = ...,
    show_exc: bool = ..., **options: Any) -> Callable[[F], F]: ...


def trace(func: Any = None, **options: Any) -> Any:
    """Trace each call of the decorated function and everything it calls; print the tree.

    The tree goes to stderr when the outermost decorated call ends (stdout stays the
    program's). Inside an already active session the function runs untouched: it is traced
    by that session. Return values, exceptions, ``__name__`` and ``__wrapped__`` are unchanged.
    A generator function (async too) is traced while it is iterated. If tracing cannot start
    (another tool holds the tool ids), the function runs untraced after one warning.
    """
    check_names(options)

    def decorate(fn: Any) -> Any:
        if isinstance(fn, (staticmethod, classmethod)):  # @trace above @staticmethod
            return type(fn)(decorate(fn.__func__))
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                session = _start_for_decorator(options)
                if session is None:
                    return await fn(*args, **kwargs)
                try:
                    return await fn(*args, **kwargs)
                finally:
                    _report(session)
            return traced_async

        if inspect.isasyncgenfunction(fn):
            @functools.wraps(fn)
            async def traced_async_generator(*args: Any, **kwargs: Any) -> Any:
                session = _start_for_decorator(options)
                inner = fn(*args, **kwargs)
                try:  # hand asend/athrow/aclose on to the wrapped generator (PEP 525)
                    try:
                        item = await inner.__anext__()
                    except StopAsyncIteration:
                        return
                    while True:
                        try:
                            sent = yield item
                        except GeneratorExit:
                            await inner.aclose()
                            raise
                        except BaseException as error:
                            try:
                                item = await inner.athrow(error)
                            except StopAsyncIteration:
                                return
                        else:
                            try:
                                item = await inner.asend(sent)
                            except StopAsyncIteration:
                                return
                finally:
                    if session is not None:
                        _report(session)
            return traced_async_generator

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def traced_generator(*args: Any, **kwargs: Any) -> Any:
                session = _start_for_decorator(options)
                if session is None:
                    return (yield from fn(*args, **kwargs))
                try:
                    return (yield from fn(*args, **kwargs))
                finally:
                    _report(session)
            return traced_generator

        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Any:
            session = _start_for_decorator(options)
            if session is None:
                return fn(*args, **kwargs)
            try:
                return fn(*args, **kwargs)
            finally:
                _report(session)
        return traced

    return decorate(func) if func is not None else decorate


def _start_for_decorator(options: dict[str, Any]) -> TraceSession | None:
    """A started session for a decorated call, or None when it must run untouched."""
    if registry.active():
        return None  # traced by the running session (or the bridge) already
    try:
        return TraceSession(**options).start()
    except (ToolIdTaken, TracingConflict) as error:
        warn_once("trace-start", f"flowtrace_otel: @trace runs untraced: {error}")
        return None


def _report(session: TraceSession) -> None:
    """Stop ``session`` and print its tree to stderr with its display options."""
    from flowtrace_otel.formatters import print_tree  # noqa: PLC0415 - avoids an import cycle

    events = session.stop()
    show = {name: getattr(session.options, name) for name in _SHOW}
    try:
        print_tree(events, file=sys.stderr, **show)
    except (OSError, ValueError):
        pass  # stderr closed or gone: the tree is lost, the program must not notice


reset_config()
