"""Sessions: who is listening to the monitor, and FlowTrace's API on top of that.

There is one :class:`~flowtrace_otel.monitoring.Monitor` per process (one ``sys.monitoring``
tool id). Sessions (and the OpenTelemetry bridge) attach to it as consumers. Sessions nest: a
session started while another is active receives the calls that end while it is attached, and
shares the running monitor's filter and capture options; asking for different ones is an error
that names them.
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

from flowtrace_otel import monitoring as m
from flowtrace_otel._options import Options, check_names, options_from_env, warn_once
from flowtrace_otel.capture import Capturer
from flowtrace_otel.events import CallEvent, folded_event, gc_paused, to_event
from flowtrace_otel.filters import CodeFilter
from flowtrace_otel.folding import Siblings
from flowtrace_otel.monitoring import Consumer, Monitor, Record, ToolIdTaken

#: options that shape what the monitor records (the rest only shape output)
MONITOR_OPTIONS = ("include", "exclude", "capture_args", "capture_result", "max_repr",
                   "max_items", "full_repr", "redact")


class TracingConflict(RuntimeError):
    """A session asked for monitor options different from the running monitor's."""


class _Registry:
    """The process-wide monitor and its consumers."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.monitor: Monitor | None = None
        self.options: Options | None = None
        self.consumers: list[Consumer] = []
        self.last_filter: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def attach(self, consumer: Consumer, options: Options,
               ctx_get: Callable[[], object] | None = None) -> Monitor:
        """Add ``consumer``; start the monitor with ``options`` if none is running."""
        with self.lock:
            if self.monitor is None:
                code_filter = CodeFilter(options.include, options.exclude)
                monitor = Monitor(
                    code_filter,
                    Capturer(options.max_repr, options.max_items, options.full_repr,
                             options.redact),
                    options.capture_args, options.capture_result, options.redact,
                )
                monitor.ctx_get = ctx_get
                monitor.set_consumers([consumer])
                monitor.start()
                if self.last_filter is not None and self.last_filter != code_filter.key():
                    # DISABLE outlives the tool id: code left out by the previous filter
                    # would stay silent for this one.
                    sys.monitoring.restart_events()
                self.last_filter = code_filter.key()
                self.monitor, self.options = monitor, options
            else:
                assert self.options is not None
                differing = [name for name in MONITOR_OPTIONS
                             if getattr(options, name) != getattr(self.options, name)]
                if differing:
                    raise TracingConflict(
                        "flowtrace_otel is already tracing with other "
                        f"{', '.join(differing)}; stop it first or use the same options"
                    )
                if ctx_get is not None:
                    self.monitor.ctx_get = ctx_get
                self.monitor.set_consumers([*self.consumers, consumer])
            self.consumers.append(consumer)
            return self.monitor

    def detach(self, consumer: Consumer) -> None:
        """Remove ``consumer``; the last one out stops the monitor (ending open calls)."""
        with self.lock:
            monitor = self.monitor
            if consumer not in self.consumers or monitor is None:
                return
            self.consumers.remove(consumer)
            if self.consumers:
                monitor.set_consumers(list(self.consumers))
                return
            self.monitor = self.options = None  # cleared first: a failing stop cannot leak it
            try:
                monitor.stop()  # frees the tool id, then reports open calls as "unfinished"
            except Exception as error:  # a consumer failed on an open call: contain it
                monitor.internal_error(error)

    def active(self) -> bool:
        """True while any session or the bridge is tracing."""
        return self.monitor is not None


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

    def __init__(self, *, record_fold_after: int = 1000, max_events: int = 20_000,
                 **options: Any) -> None:
        """Validate ``options`` over the configured defaults (unknown names raise)."""
        check_names(options)
        self.options = _defaults.replace(**options)
        self.record_fold_after = record_fold_after
        self.max_events = max_events
        self.on_end: Callable[[Record], None] = self._on_end
        self.events: list[CallEvent] = []
        self._monitor: Monitor | None = None
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
            self._import_roots.add(record[m.ID])
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
        rid = rec[m.ID]
        node = self._pending.pop(rid, None)
        parent = rec[m.PARENT]
        if parent is not None:
            key = parent[m.ID]
        elif rid in self._import_roots:
            key = _IMPORTS
        else:
            key = _TOP
        above = self._pending.get(key)
        if above is None:
            above = self._pending.setdefault(key, _Pending(self.record_fold_after))
        inside = node.calls if node is not None else 0
        above.calls += 1 + inside
        info = rec[m.INFO]
        raised = rec[m.STATUS] == "raised" and rec[m.EXC] is not None
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
        fold.add(rec[m.END] - rec[m.START], inside, raised)
        if new:
            first = to_event(rec, self._epoch_offset())
            first.import_time = key == _IMPORTS
            above.fold_events[info] = folded_event(first, fold)
        else:
            event = above.fold_events[info]
            event.end_ns = max(event.end_ns, rec[m.END] + self._epoch_offset())

    @property
    def active(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._monitor is not None

    def start(self) -> TraceSession:
        """Start recording; returns ``self``."""
        if self._monitor is not None:
            raise RuntimeError("this TraceSession is already started")
        self._reset()
        self._monitor = registry.attach(self, self.options)
        self._offset = self._monitor.epoch_offset_ns
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
                root = item[m.ROOT]
                event.import_time = root is not None and root[m.ID] in imports
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

    def __enter__(self) -> TraceSession:
        """Start on entering the block."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop on leaving the block, whatever happened in it."""
        self.stop()


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
