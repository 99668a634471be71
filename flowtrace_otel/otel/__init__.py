"""The OpenTelemetry bridge: every traced call becomes a span, in one tree with library spans.

``instrument()`` starts tracing and exporting; ``uninstrument()`` stops and flushes.
``FLOWTRACE_OTEL=1`` in the environment does the same from interpreter start-up
(:mod:`flowtrace_otel.otel.bootstrap`). This is the only part of the package that imports
``opentelemetry``.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from flowtrace_otel._options import Options, check_names, options_from_env
from flowtrace_otel.otel import context as runtime_context
from flowtrace_otel.otel import export_queue, pipeline
from flowtrace_otel.otel.bridge import Bridge
from flowtrace_otel.session import registry

__all__ = ["Bridge", "instrument", "is_instrumented", "uninstrument"]

_lock = threading.Lock()
_active: Bridge | None = None
_previous_runtime: Any = None
_exit_hook = False
log = logging.getLogger("flowtrace_otel")


def instrument(tracer_provider: TracerProvider | None = None, **options: Any) -> Bridge:
    """Start tracing user code and exporting spans; options override ``FLOWTRACE_OTEL_*``.

    ``tracer_provider``: where spans go; by default the application's global SDK provider,
    or, if none is set, a private one built from the standard ``OTEL_*`` variables.
    """
    global _active, _previous_runtime, _exit_hook
    check_names(options)
    with _lock:
        if _active is not None:
            return _active
        if not _exit_hook:
            atexit.register(_stop_and_flush)
            _exit_hook = True
        opts = options_from_env(base=Options()).replace(**options)
        bridge = Bridge(opts, tracer_provider)
        var = runtime_context.raw_var()
        monitor = registry.attach(bridge, opts, ctx_get=var.get)
        bridge.monitor = monitor
        bridge.offset = monitor.epoch_offset_ns
        monitor.handoff.child_env = bridge.child_env
        monitor.handoff.child_flush = export_queue.flush_in_child
        _previous_runtime = runtime_context.install(var, monitor, bridge.context_for)
        _active = bridge
        return bridge


def _stop_and_flush() -> None:
    """:func:`uninstrument` that never raises: at exit (and on SIGTERM with ``FLOWTRACE_OTEL``).

    Registered at exit by the first :func:`instrument`, so exit handlers registered earlier,
    weakref callbacks and module teardown run untraced: the export thread may be frozen by
    then, and nothing of that is the program's work.
    """
    try:
        uninstrument()
    except Exception as error:  # pragma: no cover - exit must stay clean
        log.debug("flowtrace_otel: flush at exit failed: %r", error)


def is_instrumented() -> bool:
    """True between :func:`instrument` and :func:`uninstrument`."""
    return _active is not None


def uninstrument(timeout_ms: int | None = None) -> None:
    """Stop tracing, end open calls as ``unfinished``, flush spans (bounded wait)."""
    global _active, _previous_runtime
    with _lock:
        bridge, _active = _active, None
        if bridge is None:
            return
        if bridge.monitor is not None:
            bridge.monitor.handoff.child_env = None
            bridge.monitor.handoff.child_flush = None
        registry.detach(bridge)
        runtime_context.restore(_previous_runtime)
        _previous_runtime = None
    flush(bridge, timeout_ms, shutdown_private=True)


def flush(bridge: Bridge, timeout_ms: int | None = None, shutdown_private: bool = False) -> None:
    """Flush what the bridge exported, waiting at most about ``timeout_ms``.

    The private pipeline is shut down with a bounded join of its export thread (the SDK's
    ``force_flush`` has no timeout: opentelemetry-python#4568); the other providers are
    flushed by :meth:`Bridge.force_flush` (a shut-down one returns at once).
    """
    limit = pipeline.exit_timeout_ms() if timeout_ms is None else timeout_ms
    if shutdown_private and bridge.private_provider is not None:
        pipeline.shutdown_bounded(bridge.private_provider, limit)
    bridge.force_flush(limit)
