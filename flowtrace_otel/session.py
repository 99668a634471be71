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
import inspect
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, overload

from flowtrace_otel._options import Options, check_names, options_from_env, warn_once
from flowtrace_otel.capture import Capturer
from flowtrace_otel.events import CallEvent, to_event
from flowtrace_otel.filters import CodeFilter, Counts, counts_of, why_nothing_recorded
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
        self.last_filter: tuple[tuple[str, ...], ...] | None = None

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


class TraceSession:
    """The core object: records every user-code call while active.

    ``with TraceSession() as s: ...`` then ``s.events``; or ``start()`` / ``stop()``.
    """

    #: on :meth:`stop` with no calls recorded, say why on stderr (one line)
    explain_empty = True

    def __init__(self, **options: Any) -> None:
        """Validate ``options`` over the configured defaults (unknown names raise)."""
        check_names(options)
        self.options = _defaults.replace(**options)
        self._records: list[Record] = []
        self.on_end: Callable[[Record], None] = self._records.append
        self.events: list[CallEvent] = []
        self._monitor: Monitor | None = None
        self._left_out_at_start: Counts = {}

    def on_root(self, record: Record) -> bool:
        """Every trace is recorded by a session."""
        return True

    @property
    def active(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._monitor is not None

    def start(self) -> TraceSession:
        """Start recording; returns ``self``."""
        if self._monitor is not None:
            raise RuntimeError("this TraceSession is already started")
        self._monitor = registry.attach(self, self.options)
        self._left_out_at_start = counts_of(self._monitor.filter)
        return self

    def stop(self) -> list[CallEvent]:
        """Stop recording and return the calls as :class:`CallEvent` objects, in start order."""
        global _last_events
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return self.events
        registry.detach(self)
        offset = monitor.epoch_offset_ns
        self.events = [to_event(rec, offset) for rec in self._records]
        self.events.sort(key=lambda event: event.id)
        self._records.clear()
        _last_events = self.events
        if not self.events and self.explain_empty:
            _explain_empty(monitor, self._left_out_at_start)
        return self.events

    def finished(self) -> list[CallEvent]:
        """The calls that have ended so far, while the session keeps recording."""
        monitor = self._monitor
        if monitor is None:
            return list(self.events)
        records = list(self._records)  # a copy: other threads may be appending
        return sorted((to_event(rec, monitor.epoch_offset_ns) for rec in records),
                      key=lambda event: event.id)

    def __repr__(self) -> str:
        """A short state line, quiet at a prompt: ``<TraceSession: tracing, 3 calls so far>``."""
        if self._monitor is not None:
            return f"<TraceSession: tracing, {len(self._records)} calls so far>"
        return f"<TraceSession: stopped, {len(self.events)} calls>"

    def __enter__(self) -> TraceSession:
        """Start on entering the block."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop on leaving the block, whatever happened in it."""
        self.stop()


def _explain_empty(monitor: Monitor, left_out_at_start: Counts) -> None:
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
