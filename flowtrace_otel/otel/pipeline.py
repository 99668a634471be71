"""Where spans go: the application's TracerProvider if it set one, else one built from ``OTEL_*``.

The global provider is never replaced: ``opentelemetry-instrument`` and applications set theirs
after start-up, so the bridge asks for the provider when a trace starts, not at import. When
none is set it builds a private one (``Resource.create()``, the sampler from
``OTEL_TRACES_SAMPLER``, a ``BatchSpanProcessor`` per exporter in ``OTEL_TRACES_EXPORTER``) and
keeps it private, so a provider the application sets later still wins. Its spans go through a
:class:`~flowtrace_otel.otel.export_queue.TraceQueue` per exporter (whole traces, a bounded
queue, an export worker invisible to ``threading``): see ``docs/export.md``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import threading
import time
import types
import warnings
import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SpanExporter,
)

from flowtrace_otel import _settings
from flowtrace_otel._options import parse_int, warn_once
from flowtrace_otel.otel import app_fast_path, bootstrap, export_queue
from flowtrace_otel.otel.deferred_export import IMPORTED_WITH_PIPELINE, DeferredExporter
from flowtrace_otel.otel.export_queue import TraceQueue

log = logging.getLogger("flowtrace_otel")

#: Spans queued before new traces are dropped whole (``FLOWTRACE_OTEL_QUEUE_SPANS``, else
#: ``OTEL_BSP_MAX_QUEUE_SIZE``); an admitted trace may grow the queue to twice this.
DEFAULT_QUEUE_SIZE = export_queue.DEFAULT_QUEUE_SPANS
QUEUE_ENV = "FLOWTRACE_OTEL_QUEUE_SPANS"
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
    if not isinstance(provider, TracerProvider):
        return None
    app_fast_path.watch(provider)  # our spans on the fast encoder in its stock OTLP pipelines
    return provider


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
    from flowtrace_otel.otel import encoding  # noqa: PLC0415

    if _protocol() == "grpc":
        if encoding.fast_export_enabled():  # the same request bytes, over the stock channel
            from flowtrace_otel.otel.grpc_export import FastGrpcSpanExporter  # noqa: PLC0415

            return _private_grpc_jitter(FastGrpcSpanExporter(**kwargs))
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcExporter,
        )
        return _private_grpc_jitter(GrpcExporter(**kwargs))
    if encoding.fast_export_enabled():  # byte-identical, 6-9x cheaper to encode
        return _private_jitter(encoding.FastOTLPSpanExporter(**kwargs))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpExporter,
    )
    return _private_jitter(HttpExporter(**kwargs))


_jitter_random = random.Random(int.from_bytes(os.urandom(16), "big"))


def _private_jitter(exporter: SpanExporter) -> SpanExporter:
    """Make this exporter's retry jitter draw from our own generator, not the global ``random``.

    The stock HTTP client computes a jittered backoff with ``random.uniform`` before *every*
    request (``_OTLPHTTPClient._compute_backoff``), which advances the program's global random
    state while it runs: Hypothesis then warns that a strategy used ``random``. Only this
    exporter object is changed (an instance attribute), not the class or the module.
    """
    client = getattr(exporter, "_client", None)
    jitter = getattr(client, "_jitter", None)
    if client is None or not isinstance(jitter, float) or not hasattr(client, "_compute_backoff"):
        return exporter

    def compute_backoff(retry: int) -> float:
        """``2**retry`` seconds with +-jitter, from the private generator."""
        return float(2**retry * _jitter_random.uniform(1 - jitter, 1 + jitter))

    client._compute_backoff = compute_backoff
    return exporter


def _private_grpc_jitter(exporter: SpanExporter) -> SpanExporter:
    """Give this gRPC exporter's retry loop our own generator in place of the global ``random``.

    The stock loop (``OTLPExporterMixin._export``) draws ``random.uniform(0.8, 1.2)`` inline,
    from its module's global ``random``, on every failed request. This exporter object gets its
    own copy of that function, made from the same code object with the module's globals except
    ``random``, which names our generator (a ``random.Random`` has the same ``uniform``). The
    library's module, class and function are untouched; only this object's ``_export`` differs.
    Left stock if the installed exporter is laid out otherwise (the test of the private names
    says so).
    """
    stock = getattr(type(exporter), "_export", None)
    if not isinstance(stock, types.FunctionType) or stock.__closure__ is not None \
            or "random" not in stock.__code__.co_names:
        return exporter
    code = stock.__code__
    module_globals = {**stock.__globals__, "random": _jitter_random}
    private = types.FunctionType(code, module_globals, stock.__name__, stock.__defaults__)
    private.__kwdefaults__ = stock.__kwdefaults__
    private.__qualname__ = stock.__qualname__
    exporter._export = types.MethodType(private, exporter)  # type: ignore[attr-defined]
    return exporter


def _deferred_otlp() -> SpanExporter:
    """The OTLP exporter: its modules imported now, the object built at its first export."""
    return DeferredExporter(_otlp_exporter, IMPORTED_WITH_PIPELINE[_protocol()])


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


class _Quiet(logging.Filter):
    """Keep the private pipeline's export errors off the user's stderr; remember the first.

    What was not delivered, and why, is said once, at exit (:func:`report_undelivered`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self.first = ""

    def filter(self, record: logging.LogRecord) -> bool:
        """Swallow warnings and errors, keeping the first one's text as the reason."""
        export_queue.forget_dummy_thread()  # logging asked threading for the thread's name
        if record.levelno < logging.WARNING:
            return True
        self.seen += 1
        if self.seen == 1:
            self.first = record.getMessage()
        return False


_quiet = _Quiet()
_QUIET_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                  "opentelemetry.exporter.otlp.proto.grpc.exporter",
                  "opentelemetry.exporter.otlp.proto.http", "opentelemetry.sdk.trace.export",
                  "opentelemetry.sdk._shared_internal")


#: the exporters each private provider was built with (what :func:`not_sent_reason` reports)
_BUILT_WITH: weakref.WeakKeyDictionary[TracerProvider, tuple[str, ...]] = (
    weakref.WeakKeyDictionary())


def build_private_provider() -> TracerProvider:
    """A TracerProvider from the standard ``OTEL_*`` variables, not registered globally.

    ``OTEL_SDK_DISABLED=true`` gives it no exporter: nothing is sent, as the SDK would not.
    """
    provider = TracerProvider(shutdown_on_exit=False)
    limit = _env_int(QUEUE_ENV, _env_int("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_QUEUE_SIZE))
    batch = _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", export_queue.DEFAULT_BATCH_SPANS)
    delay = _env_int("OTEL_BSP_SCHEDULE_DELAY", export_queue.DEFAULT_DELAY_MS)
    names = ("disabled",) if bootstrap.sdk_disabled() else tuple(exporter_names())
    _BUILT_WITH[provider] = names
    for name in names:
        make: Any = {"otlp": _deferred_otlp, "console": ConsoleSpanExporter}.get(name)
        if make is not None:
            provider.add_span_processor(TraceQueue(make(), limit, batch, delay, make))
    for logger_name in _QUIET_LOGGERS:
        logger = logging.getLogger(logger_name)
        if _quiet not in logger.filters:
            logger.addFilter(_quiet)
    return provider


def _env_int(name: str, default: int) -> int:
    """A positive integer variable, or ``default`` (a bad value warns once)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    return parse_int(name, raw, default, minimum=1)


def not_sent_reason(private: TracerProvider | None, others: list[TracerProvider]) -> str:
    """Why the bridge's spans were not sent to an OTLP endpoint; '' when they were.

    ``others`` are the providers besides the private one that spans may have gone to (the
    application's, an explicit one): where those send spans is up to their own exporters.
    """
    if others:
        return "handed to the program's own TracerProvider (its exporters decide where they go)"
    names = _BUILT_WITH.get(private, ()) if private is not None else ()
    if "otlp" in names or private is None:
        return ""
    if names == ("disabled",):
        return "not exported: OTEL_SDK_DISABLED=true"
    if "console" in names:
        return "written by the console exporter, not sent to an OTLP endpoint " \
               "(OTEL_TRACES_EXPORTER=console)"
    return "not exported: OTEL_TRACES_EXPORTER=none"


def trace_queues(provider: TracerProvider) -> list[TraceQueue]:
    """The private pipeline's trace queues."""
    processors = getattr(provider._active_span_processor, "_span_processors", ())
    return [p for p in processors if isinstance(p, TraceQueue)]


def _endpoint() -> str:
    """The OTLP traces endpoint as configured (for messages)."""
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "the default endpoint")


def _reason(message: str) -> str:
    """The gist of an exporter's log message, short enough for one line."""
    message = message.removeprefix("Transient error ").split(" encountered while exporting")[0]
    errno = re.search(r"\[Errno -?\d+\] [^\"')]+", message)  # urllib3 nests the OS error
    if errno is not None:
        return errno.group(0)
    return message if len(message) <= 200 else message[:199] + "…"


def undelivered_line(provider: TracerProvider, waited_ms: int | None = None) -> str:
    """One line saying how many spans did not reach the backend and why ('' if none).

    Three causes, each with its count: traces dropped whole (the queue was full), spans the
    exporter failed to deliver (with the reason it gave, else the first one it logged), and
    spans still queued or being sent when the exit wait (``waited_ms``) ended.
    """
    queues = trace_queues(provider)
    lost = sum(q.undelivered() for q in queues)
    if not lost:
        return ""
    reasons = []
    dropped = sum(q.drops.total_traces for q in queues)
    if dropped:
        reasons.append(f"{dropped} traces dropped whole, the queue was full "
                       f"({QUEUE_ENV}={queues[0].limit})")
    failed = sum(q.failed_spans for q in queues)
    if failed:
        said = next((q.last_error for q in queues if q.last_error), "") or _quiet.first
        why = _reason(said) or "the exporter gave no reason"
        attempts = sum(q.failed_attempts for q in queues)
        reasons.append(f"{failed} failed to export to {_endpoint()} after {attempts} "
                       f"attempts: {why}")
    held = sum(q.held for q in queues)
    if held:
        wait = f" ({waited_ms} ms, FLOWTRACE_OTEL_EXIT_TIMEOUT_MS)" if waited_ms is not None else ""
        sent = sum(q.sent_spans for q in queues)
        reasons.append(f"{held} still queued or being sent when the exit wait{wait} ended "
                       f"({sent} sent to {_endpoint()} by then)")
    return f"flowtrace_otel: {lost} spans not delivered: {'; '.join(reasons)}"


def exit_timeout_ms() -> int:
    """How long exit may wait for the last spans."""
    timeout: int = _settings.read("FLOWTRACE_OTEL_EXIT_TIMEOUT_MS")
    return timeout


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
            if isinstance(processor, TraceQueue):
                processor.shutdown(timeout_millis=timeout_ms)
            elif inner is not None:
                inner.shutdown(timeout_millis=timeout_ms)
            else:
                processor.shutdown()
        except Exception as error:  # exit must stay clean
            log.debug("flowtrace_otel: processor shutdown failed: %r", error)
    line = undelivered_line(provider, timeout_ms)
    if line:
        print(line, file=sys.stderr, flush=True)


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


def _os_threads() -> int:
    """The process's thread count as the kernel sees it (what CPython's fork warning counts)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[17])  # field 20 of stat(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return 0


#: how long a fork waits for joined threads to leave the OS thread count
_LINGER_S = 0.05


def _only_export_threads() -> bool:
    """True when every thread but the main one is an export worker of the private pipeline.

    Waits (boundedly) for threads that were joined to leave the OS count first.
    """
    workers = sum(1 for q in export_queue.queues() if q.worker_alive())
    # a worker that logs (or imports code that does) may be listed as a dummy thread for a
    # moment, until it unlists itself: it is still only ours
    main = threading.main_thread()
    if any(t is not main and t.ident not in export_queue.worker_idents
           for t in threading.enumerate()):
        return False
    # A thread that was joined may still exist for a moment at the OS level, where Python's
    # warning counts threads: the SDK's resource detection runs in a thread pool when the
    # private provider is built at the first trace, often just before a program forks. Give
    # such threads a bounded moment to be gone (fork only, and only when the counts differ).
    deadline = time.monotonic() + _LINGER_S
    while _os_threads() > 1 + workers:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return workers > 0  # with none, the OS count is 1 now: python will not warn


def _before_fork() -> None:
    """Announce a fork warning to ignore, if our threads alone would cause it."""
    _fork_warning.pending = _only_export_threads()
    filters: list[Any] = warnings.filters  # type: ignore[assignment]
    if _fork_warning.pending and not any(f[1] is _fork_warning for f in filters):
        filters.insert(0, ("ignore", _fork_warning, DeprecationWarning, None, 0))
        _filters_changed()


def _after_fork() -> None:
    """3.12 has warned by now: drop the filter (on 3.13 it stays, inert, until used)."""
    if not _fork_warning.pending:
        filters: list[Any] = warnings.filters  # type: ignore[assignment]
        entries = [f for f in filters if f[1] is _fork_warning]
        for entry in entries:
            filters.remove(entry)
        if entries:
            _filters_changed()


def _filters_changed() -> None:
    """Tell ``warnings`` its filter list changed (3.12/3.13 cache it; 3.14 has no such call)."""
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:
        mutated()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork)
