"""Where spans go: the application's TracerProvider if it set one, else one built from ``OTEL_*``.

The global provider is never replaced: ``opentelemetry-instrument`` and applications set theirs
after start-up, so the bridge asks for the provider when a trace starts, not at import. When
none is set it builds a private one (``Resource.create()``, the sampler from
``OTEL_TRACES_SAMPLER``, a ``BatchSpanProcessor`` per exporter in ``OTEL_TRACES_EXPORTER``) and
keeps it private, so a provider the application sets later still wins.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from flowtrace_otel._options import parse_int, warn_once
from flowtrace_otel.otel.deferred_export import NEEDED_BEFORE_EXIT, DeferredExporter

log = logging.getLogger("flowtrace_otel")

#: Spans queued before the oldest are dropped, when ``OTEL_BSP_MAX_QUEUE_SIZE`` is unset
#: (the SDK's 2048 dropped ~40% of a request workload's spans here, roots included).
DEFAULT_QUEUE_SIZE = 16384
#: Seconds the exporter may take per request when ``OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT`` is unset.
DEFAULT_EXPORT_TIMEOUT_S = 5.0
#: Seconds the program may wait at exit for the last spans (``FLOWTRACE_OTEL_EXIT_TIMEOUT_MS``).
DEFAULT_EXIT_TIMEOUT_MS = 3000
_PROTOCOLS = ("grpc", "http/protobuf")
_EXPORTERS = ("otlp", "console", "none")


#: the API loads a global provider named by this variable on first use (read once, at import)
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def application_provider() -> TracerProvider | None:
    """The SDK TracerProvider the application (or opentelemetry-instrument) set, if any.

    Asked for every exported span: the global is read directly, since ``get_tracer_provider()``
    looks ``OTEL_PYTHON_TRACER_PROVIDER`` up in ``os.environ`` on every call until one is set
    (about 7% of the bridge's CPU on the request benchmark).
    """
    provider = getattr(trace, "_TRACER_PROVIDER", None)
    if provider is None:
        if not _PROVIDER_FROM_ENV:
            return None
        provider = trace.get_tracer_provider()  # loads OTEL_PYTHON_TRACER_PROVIDER
    return provider if isinstance(provider, TracerProvider) else None


def _protocol() -> str:
    """The OTLP protocol from the environment (``http/protobuf`` by default, as the spec says)."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        raw = os.environ.get(name)
        if raw is None:
            continue
        value = raw.strip().lower()
        if value in _PROTOCOLS:
            return value
        if value == "http/json":
            warn_once(name, f"{name}=http/json is not supported by the Python exporter; "
                            "using http/protobuf")
        else:
            warn_once(name, f"{name}={raw!r} is not one of {', '.join(_PROTOCOLS)}; "
                            "using http/protobuf")
        return "http/protobuf"
    return "http/protobuf"


def _timeout() -> float | None:
    """Exporter timeout: the env's if set (the exporter reads it), else ours."""
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_TIMEOUT"):
        return None
    return DEFAULT_EXPORT_TIMEOUT_S


def _otlp_exporter() -> SpanExporter:
    """The OTLP exporter for the configured protocol; it reads endpoint and headers itself."""
    timeout = _timeout()
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if _protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcExporter,
        )
        return GrpcExporter(**kwargs)  # type: ignore[no-any-return]
    from flowtrace_otel.otel import encoding  # noqa: PLC0415

    if encoding.fast_export_enabled():  # byte-identical, 6-9x cheaper to encode
        return encoding.FastOTLPSpanExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpExporter,
    )
    return HttpExporter(**kwargs)  # type: ignore[no-any-return]


def exporter_names() -> list[str]:
    """``OTEL_TRACES_EXPORTER`` as a list; unknown names warn once and are skipped."""
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    names: list[str] = []
    for item in (part.strip().lower() for part in raw.split(",")):
        if item in _EXPORTERS:
            names.append(item)
        elif item:
            warn_once(f"OTEL_TRACES_EXPORTER:{item}",
                      f"OTEL_TRACES_EXPORTER: unknown exporter {item!r} ignored "
                      f"(known: {', '.join(_EXPORTERS)})")
    return names or ["otlp"]


class _FirstOnly(logging.Filter):
    """Let one export error through to the user's stderr, count the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self.seen += 1
        if self.seen == 1:
            record.msg = f"flowtrace_otel: spans could not be exported: {record.getMessage()}"
            record.args = ()
            return True
        return False


_quiet = _FirstOnly()
_QUIET_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                  "opentelemetry.exporter.otlp.proto.grpc.exporter",
                  "opentelemetry.exporter.otlp.proto.http", "opentelemetry.sdk.trace.export",
                  "opentelemetry.sdk._shared_internal")


def build_private_provider() -> TracerProvider:
    """A TracerProvider from the standard ``OTEL_*`` variables, not registered globally."""
    provider = TracerProvider(shutdown_on_exit=False)
    queue = None if os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") else DEFAULT_QUEUE_SIZE
    for name in exporter_names():
        exporter: SpanExporter | None = None
        if name == "otlp":  # built at the first export, on the export thread
            exporter = DeferredExporter(_otlp_exporter, NEEDED_BEFORE_EXIT.get(_protocol(), ()))
        elif name == "console":
            exporter = ConsoleSpanExporter()
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue))
    for logger_name in _QUIET_LOGGERS:
        logger = logging.getLogger(logger_name)
        if _quiet not in logger.filters:
            logger.addFilter(_quiet)
    remember_workers(provider)
    return provider


def exit_timeout_ms() -> int:
    """How long exit may wait for the last spans."""
    raw = os.environ.get("FLOWTRACE_OTEL_EXIT_TIMEOUT_MS")
    if raw is None:
        return DEFAULT_EXIT_TIMEOUT_MS
    return parse_int("FLOWTRACE_OTEL_EXIT_TIMEOUT_MS", raw, DEFAULT_EXIT_TIMEOUT_MS)


def bounded(action: Any, timeout_ms: int) -> None:
    """Run ``action`` in a daemon thread and wait at most ``timeout_ms`` for it.

    At interpreter exit no thread can start any more; then nothing is done (the provider's own
    exit handler flushes it).
    """
    worker = threading.Thread(target=action, name="flowtrace-otel-flush", daemon=True)
    try:
        worker.start()
    except RuntimeError:
        return
    worker.join(timeout_ms / 1000)


def shutdown_bounded(provider: TracerProvider, timeout_ms: int) -> None:
    """Shut the private provider's batch processors down, each export thread joined with a limit."""
    processors = getattr(provider._active_span_processor, "_span_processors", ())
    for processor in processors:
        inner = getattr(processor, "_batch_processor", None)
        try:
            if inner is not None:
                inner.shutdown(timeout_millis=timeout_ms)
            else:
                processor.shutdown()
        except Exception as error:  # exit must stay clean
            log.debug("flowtrace_otel: processor shutdown failed: %r", error)


class _OurForkWarning:
    """Matches Python's fork-with-threads warning once, when only our export threads caused it.

    Python 3.12+ warns on ``os.fork()`` when other threads run. If the only threads besides
    the main one are the private pipeline's export threads, the untraced program would not
    have been warned, so that one warning is ignored. Used as the message matcher of a
    ``warnings`` filter (which calls ``match``); inert after it matched or once forking ends.
    """

    def __init__(self) -> None:
        self.pending = False

    def match(self, text: str) -> bool:
        """True for the one fork warning announced by :func:`_before_fork`."""
        if self.pending and "is multi-threaded, use of fork()" in text:
            self.pending = False
            return True
        return False


_fork_warning = _OurForkWarning()
_private_workers: list[Any] = []


def _only_export_threads() -> bool:
    """True when every thread but the main one is an export thread of the private pipeline."""
    ours = {id(worker) for worker in _private_workers}
    main = threading.main_thread()
    return bool(ours) and all(t is main or id(t) in ours for t in threading.enumerate())


def _before_fork() -> None:
    """Announce a fork warning to ignore, if our threads alone would cause it."""
    _fork_warning.pending = _only_export_threads()
    filters: list[Any] = warnings.filters  # type: ignore[assignment]
    if _fork_warning.pending and not any(f[1] is _fork_warning for f in filters):
        filters.insert(0, ("ignore", _fork_warning, DeprecationWarning, None, 0))
        warnings._filters_mutated()  # type: ignore[attr-defined]


def _after_fork() -> None:
    """3.12 has warned by now: drop the filter (on 3.13 it stays, inert, until used)."""
    if not _fork_warning.pending:
        filters: list[Any] = warnings.filters  # type: ignore[assignment]
        entries = [f for f in filters if f[1] is _fork_warning]
        for entry in entries:
            filters.remove(entry)
        if entries:
            warnings._filters_mutated()  # type: ignore[attr-defined]


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork)


def remember_workers(provider: TracerProvider) -> None:
    """Note the private pipeline's export threads (see :class:`_OurForkWarning`)."""
    for processor in getattr(provider._active_span_processor, "_span_processors", ()):
        worker = getattr(getattr(processor, "_batch_processor", None), "_worker_thread", None)
        if worker is not None:
            _private_workers.append(worker)
