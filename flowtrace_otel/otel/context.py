"""The current span for OpenTelemetry, without an attach/detach per call.

The bridge swaps the API's runtime context (``opentelemetry.context._RUNTIME_CONTEXT``) for a
subclass of the standard ``ContextVarsRuntimeContext`` sharing its ``ContextVar``. Its
``get_current()`` answers: if a traced call is open in this thread/task and nobody attached a
context since it started, the Context holding that call's span (built on first request); else
the attached context, exactly as before. ``attach``/``detach`` set and reset the variable as
before, so instrumented libraries keep their own spans current as usual; ``attach`` also tells
:mod:`~flowtrace_otel.otel.request_scope` about a span attached while no traced call is open
(a request span), so that calls running after it ended, in the same request, stay in its trace.

The monitor reads the raw context of each call with :func:`raw_getter`: the attached context,
or :data:`~flowtrace_otel.otel.deferred.NOTHING` while none is attached, which is also what it
records before OpenTelemetry is imported (see :mod:`flowtrace_otel.otel.deferred`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

from flowtrace_otel import records as r
from flowtrace_otel.interrupts import program_exception
from flowtrace_otel.monitor_protocol import CallMonitor
from flowtrace_otel.otel.deferred import NOTHING


class CallAwareRuntimeContext(ContextVarsRuntimeContext):
    """``ContextVarsRuntimeContext`` whose current span follows the innermost traced call."""

    def __init__(self, var: ContextVar[Context], monitor: CallMonitor,
                 context_for: Callable[[r.Record], Context]) -> None:
        """Share ``var`` with the runtime context being replaced."""
        self._current_context = var
        self._raw = raw_getter(var)
        self._monitor = monitor
        self._context_for = context_for

    def get_current(self) -> Context:
        """The innermost open traced call's context, unless a library attached one since."""
        raw = self._raw()
        try:
            record, expected = self._monitor.current()
            if record is None or raw is not expected or not record.recording:
                return self._current_context.get() if raw is NOTHING else raw  # type: ignore[return-value]
            state = record.ext
            if state is not None and not state.sampled:
                return self._current_context.get() if raw is NOTHING else raw  # type: ignore[return-value]
            return self._context_for(record)
        except Exception as error:  # never break the caller's OTel calls
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's
                raise mine  # noqa: B904 - the same exception, going on
            return self._current_context.get()

    def attach(self, context: Context) -> Token[Context]:
        """Set the current context, as the standard one does; note a request span."""
        token = self._current_context.set(context)
        try:
            record, _ = self._monitor.current()
            if record is None:  # no traced call open here: a request span, maybe
                _note_request_span(context)
        except Exception as error:  # never break the caller's OTel calls
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's
                raise mine  # noqa: B904 - the same exception, going on
        return token


_request_scope: Any = None


def _note_request_span(context: Context) -> None:
    """Tell :mod:`~flowtrace_otel.otel.request_scope` (imported at first use, not with this
    module: that is installed while ``opentelemetry.context`` is imported, and the request
    scope needs ``opentelemetry.trace``, which may not be importable yet at that moment)."""
    global _request_scope
    if _request_scope is None:
        from flowtrace_otel.otel import request_scope  # noqa: PLC0415 - see above

        _request_scope = request_scope
    _request_scope.attached(context)


def raw_var() -> ContextVar[Context]:
    """The ContextVar behind the current runtime context (shared, so nothing attached is lost)."""
    var = getattr(otel_context._RUNTIME_CONTEXT, "_current_context", None)  # type: ignore[attr-defined]
    if isinstance(var, ContextVar):
        return var
    return ContextVar("current_context", default=Context())  # noqa: B039 - as the OTel API does


def raw_getter(var: ContextVar[Context]) -> Callable[[], object]:
    """The monitor's reader of a call's raw context: the attached Context, or ``NOTHING``.

    ``ContextVar.get(default)`` prefers the argument to the variable's own default, so an
    unset variable reads as ``NOTHING``, as before OpenTelemetry was imported.
    """
    return functools.partial(var.get, NOTHING)


def install(var: ContextVar[Context], monitor: CallMonitor,
            context_for: Callable[[r.Record], Context]) -> Any:
    """Install the call-aware runtime context over ``var``; return the one it replaces."""
    previous = otel_context._RUNTIME_CONTEXT  # type: ignore[attr-defined]
    otel_context._RUNTIME_CONTEXT = CallAwareRuntimeContext(var, monitor, context_for)  # type: ignore[attr-defined]
    return previous


def restore(previous: Any) -> None:
    """Put back the runtime context replaced by :func:`install`."""
    otel_context._RUNTIME_CONTEXT = previous  # type: ignore[attr-defined]
