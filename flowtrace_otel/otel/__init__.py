"""The OpenTelemetry bridge: every traced call becomes a span, in one tree with library spans.

``instrument()`` starts tracing and exporting; ``uninstrument()`` stops and flushes.
``FLOWTRACE_OTEL=1`` in the environment does the same from interpreter start-up
(:mod:`flowtrace_otel.otel.bootstrap`), importing OpenTelemetry only when it is needed
(:mod:`flowtrace_otel.otel.deferred`). This is the only part of the package that imports
``opentelemetry``; importing this module itself does not.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from flowtrace_otel._options import Options, check_names, options_from_env
from flowtrace_otel.otel import deferred
from flowtrace_otel.session import registry

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from flowtrace_otel.otel.bridge import Bridge

__all__ = ["Bridge", "instrument", "instrument_for_tool", "is_instrumented", "uninstrument",
           "uninstrument_for_tool"]

_lock = threading.RLock()
#: the monitor's consumer while instrumented: a Bridge, or a DeferredBridge (FLOWTRACE_OTEL=1)
_active: Any = None
#: the active consumer was started by an outer tool (``FLOWTRACE_OTEL=1``, ``run --otel``): the
#: program's own instrument()/uninstrument()/is_instrumented() behave as if it were not there
_tool_bridge = False
#: the program called instrument() while the tool's bridge was active
_program_joined = False
_previous_runtime: Any = None
_context_installed = False
_watch: deferred.ContextImportWatch | None = None
_exit_hook = False
log = logging.getLogger("flowtrace_otel")


def __getattr__(name: str) -> Any:
    """``Bridge`` is imported on first use (it imports the OpenTelemetry SDK)."""
    if name == "Bridge":
        from flowtrace_otel.otel.bridge import Bridge  # noqa: PLC0415

        return Bridge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def instrument(tracer_provider: TracerProvider | None = None, **options: Any) -> Bridge:
    """Start tracing user code and exporting spans; options override ``FLOWTRACE_OTEL_*``.

    ``tracer_provider``: where spans go; by default the application's global SDK provider,
    or, if none is set, a private one built from the standard ``OTEL_*`` variables.
    """
    global _program_joined
    check_names(options)
    with _lock:
        if _active is not None and _tool_bridge:
            _program_joined = True  # shares the tool's bridge; its uninstrument() only flushes
            return _built(_active)
    return _instrument(tracer_provider, options, tool=False)


def instrument_for_tool(**options: Any) -> Bridge:
    """:func:`instrument` for an outer tool: invisible to the program's own API calls."""
    return _instrument(None, options, tool=True)


def _instrument(tracer_provider: TracerProvider | None, options: dict[str, Any],
                tool: bool) -> Bridge:
    """Start the bridge (or return the active one)."""
    check_names(options)
    from flowtrace_otel.otel.bridge import Bridge  # noqa: PLC0415

    with _lock:
        if _active is not None:
            return _built(_active)
        opts = options_from_env(base=Options()).replace(**options)
        bridge = Bridge(opts, tracer_provider)
        _attach(bridge, opts, tool)
        _connect(bridge, bridge.monitor)
        return bridge


def _built(consumer: Any) -> Bridge:
    """The bridge behind the active consumer, built now if it was deferred."""
    if isinstance(consumer, deferred.DeferredBridge):
        bridge = consumer.bridge or consumer._build()
        if bridge is None:
            raise RuntimeError("flowtrace_otel: the OpenTelemetry bridge could not be built")
        return bridge
    return consumer  # type: ignore[no-any-return]


def instrument_on_first_trace() -> None:
    """``FLOWTRACE_OTEL=1``: start tracing now, import OpenTelemetry when it is needed."""
    with _lock:
        if _active is not None:
            return
        opts = options_from_env(base=Options())
        consumer = deferred.DeferredBridge(opts, _build_bridge)
        _attach(consumer, opts, tool=True)


def _build_bridge(options: Options) -> Bridge:
    """The bridge for a deferred start (called when the first trace starts)."""
    from flowtrace_otel.otel.bridge import Bridge  # noqa: PLC0415

    bridge = Bridge(options)
    _install_context()  # importing the bridge imported OpenTelemetry: done by the watch
    _connect(bridge, getattr(_active, "monitor", None))
    return bridge


def _connect(bridge: Bridge, monitor: Any) -> None:
    """Give the bridge the monitor it consumes from."""
    if monitor is None:
        return
    from flowtrace_otel.otel import export_queue  # noqa: PLC0415 - the bridge imported the SDK

    bridge.monitor = monitor
    bridge.offset = monitor.epoch_offset_ns
    monitor.handoff.child_env = bridge.child_env
    monitor.handoff.child_flush = export_queue.flush_in_child


def _attach(consumer: Any, opts: Options, tool: bool) -> None:
    """Attach ``consumer`` to the monitor; the runtime context now or when OTel is imported."""
    global _active, _exit_hook, _watch, _tool_bridge
    if not _exit_hook:
        atexit.register(_stop_and_flush)
        _exit_hook = True
    monitor = registry.attach(consumer, opts, ctx_get=deferred.nothing_getter(), tool=tool)
    consumer.monitor = monitor
    _active, _tool_bridge = consumer, tool
    if deferred.CONTEXT_MODULE in sys.modules:
        _install_context()
    else:
        _watch = deferred.ContextImportWatch(_context_imported)
        _watch.start()


def _context_imported() -> None:
    """``opentelemetry.context`` was just imported: install the call-aware runtime context."""
    try:
        _install_context()
    except Exception as error:  # never break the importer
        log.warning("flowtrace_otel: library spans will not nest under calls: %r", error)


def _install_context() -> None:
    """Install the call-aware runtime context and read raw contexts from its variable (once)."""
    global _previous_runtime, _context_installed, _watch
    with _lock:
        consumer = _active
        if consumer is None or _context_installed:
            return
        from flowtrace_otel.otel import context as runtime_context  # noqa: PLC0415

        if _watch is not None:
            _watch.stop()
            _watch = None
        monitor = consumer.monitor
        var = runtime_context.raw_var()
        _previous_runtime = runtime_context.install(var, monitor, consumer.context_for)
        _context_installed = True
        monitor.ctx_get = runtime_context.raw_getter(var)
        monitor.set_consumers(list(monitor.consumers))  # the callbacks read the new reader


def _stop_and_flush() -> None:
    """:func:`uninstrument` that never raises: at exit (and on SIGTERM with ``FLOWTRACE_OTEL``).

    Registered at exit by the first :func:`instrument`, so exit handlers registered earlier,
    weakref callbacks and module teardown run untraced: the export thread may be frozen by
    then, and nothing of that is the program's work.
    """
    exporters_before = _exporters_built()
    try:
        _stop()
    except Exception as error:  # pragma: no cover - exit must stay clean
        log.debug("flowtrace_otel: flush at exit failed: %r", error)
    if _exporters_built() != exporters_before:  # imported at exit: mind python's exit status
        from flowtrace_otel.otel import deferred_export  # noqa: PLC0415

        deferred_export.keep_keyboard_interrupt_exit()


def _exporters_built() -> int:
    """How many deferred exporters were built so far (0 if none was ever made)."""
    module = sys.modules.get("flowtrace_otel.otel.deferred_export")
    return int(getattr(module, "builds", 0))


def active_bridge() -> Bridge | None:
    """The bridge exporting now, whoever started it; None if none (or a deferred one not built)."""
    consumer = _active
    if isinstance(consumer, deferred.DeferredBridge):
        return consumer.bridge
    return consumer  # type: ignore[no-any-return]


def exporting() -> bool:
    """True while a bridge consumes calls (``FLOWTRACE_OTEL=1``'s deferred one included)."""
    return _active is not None


def is_instrumented() -> bool:
    """True between the program's :func:`instrument` and :func:`uninstrument`."""
    return _active is not None and (not _tool_bridge or _program_joined)


def uninstrument(timeout_ms: int | None = None) -> None:
    """Stop tracing, end open calls as ``unfinished``, flush spans (bounded wait).

    Under an outer tool's bridge, the program's call only flushes: the tool goes on tracing.
    """
    global _program_joined
    with _lock:
        consumer, tool, joined = _active, _tool_bridge, _program_joined
        _program_joined = False
    if consumer is not None and tool:
        bridge = _built(consumer) if joined else None
        if bridge is not None:
            from flowtrace_otel.otel import pipeline  # noqa: PLC0415

            bridge.force_flush(pipeline.exit_timeout_ms() if timeout_ms is None else timeout_ms)
        return
    _stop(timeout_ms)


def uninstrument_for_tool(timeout_ms: int | None = None) -> None:
    """:func:`uninstrument` for an outer tool: stop the bridge, whoever joined it, and flush."""
    _stop(timeout_ms)


def _stop(timeout_ms: int | None = None) -> None:
    """Stop the active bridge, whoever started it, and flush."""
    global _active, _previous_runtime, _context_installed, _watch, _tool_bridge, _program_joined
    with _lock:
        consumer, _active = _active, None
        _tool_bridge = _program_joined = False
        if consumer is None:
            return
        if _watch is not None:
            _watch.stop()
            _watch = None
        if consumer.monitor is not None:
            consumer.monitor.handoff.child_env = None
            consumer.monitor.handoff.child_flush = None
        registry.detach(consumer)
        if _context_installed:
            from flowtrace_otel.otel import context as runtime_context  # noqa: PLC0415

            runtime_context.restore(_previous_runtime)
            _previous_runtime = None
            _context_installed = False
    bridge = consumer.bridge if isinstance(consumer, deferred.DeferredBridge) else consumer
    if bridge is not None:
        flush(bridge, timeout_ms, shutdown_private=True)
    from flowtrace_otel.otel import app_fast_path  # noqa: PLC0415

    app_fast_path.release()  # the application's exporters are stock again


def flush(bridge: Bridge, timeout_ms: int | None = None, shutdown_private: bool = False) -> None:
    """Flush what the bridge exported, waiting at most about ``timeout_ms``.

    The private pipeline is shut down with a bounded join of its export thread (the SDK's
    ``force_flush`` has no timeout: opentelemetry-python#4568); the other providers are
    flushed by :meth:`Bridge.force_flush` (a shut-down one returns at once).
    """
    from flowtrace_otel.otel import pipeline  # noqa: PLC0415

    limit = pipeline.exit_timeout_ms() if timeout_ms is None else timeout_ms
    if shutdown_private and bridge.private_provider is not None:
        pipeline.shutdown_bounded(bridge.private_provider, limit)
    bridge.force_flush(limit)
