"""Our spans on the fast encoder inside the application's own stock pipeline.

Under ``opentelemetry-instrument`` (or any application that sets an SDK ``TracerProvider``), our
spans go to the application's provider and processors, as every other span does; the provider
and the processors are never replaced. When one of those processors is exactly the SDK's
``BatchSpanProcessor`` and its exporter is exactly the stock OTLP span exporter (gRPC, or
HTTP/protobuf), :func:`adopt` changes that one exporter *object* so that the requests it builds
encode flowtrace_otel's spans with the hand-written encoder and every other span (the
application's) with the stock encoder's own code, in the stock grouping by resource and scope:
the bytes on the wire are the stock exporter's for the same batch (the tests check it at a real
receiver, for both protocols).

What changes, on that exporter instance only (the class, the module and other exporters are
untouched), and what :func:`release` puts back:

- gRPC: instance attributes ``_translate_data`` (the request as encoded bytes) and ``_stub``
  (:class:`~flowtrace_otel.otel.grpc_export.RawTraceServiceStub`, the stock ``Export`` call with
  a serializer that passes bytes through and still serializes a protobuf request); ``_client``
  is rebuilt with it on the same channel. The stock ``_export`` (deadline, metadata, retries,
  channel rebuilt after ``UNAVAILABLE``, logging, metrics) runs as it is.
- HTTP/protobuf: an instance attribute ``export``, the stock ``export`` with this encoder
  (:func:`~flowtrace_otel.otel.encoding.http_export`).

Any other processor (a custom one, ``SimpleSpanProcessor``, a ``BatchSpanProcessor`` with any
other exporter, or a stock exporter someone already changed) is left as it is, and every
processor still receives the same real ``ReadableSpan`` objects. ``FLOWTRACE_OTEL_FAST_EXPORT=0``
turns this off.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from flowtrace_otel import _settings

__all__ = ["adopt", "adopted", "release", "stock_exporter", "watch"]

log = logging.getLogger("flowtrace_otel")

#: exporter -> the instance attributes it had before :func:`adopt` (None: had none)
_ADOPTED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
#: the processors tuple :func:`watch` last looked at
_seen: list[Any] = [None]
_lock = threading.Lock()
_MISSING = object()
#: the attributes a stock exporter must not already have on the instance to be adopted
_GRPC_OWN = ("_translate_data", "_initialize_channel_and_stub", "_export", "export")
_HTTP_OWN = ("export",)


def _stock_classes() -> tuple[Any, Any]:
    """The stock gRPC and HTTP OTLP span exporter classes, where imported (an exporter of
    theirs exists only then): nothing is imported here."""
    grpc_module = sys.modules.get("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    http_module = sys.modules.get("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    return (getattr(grpc_module, "OTLPSpanExporter", None),
            getattr(http_module, "OTLPSpanExporter", None))


def _processors(provider: TracerProvider) -> Any:
    """The provider's span processors (a tuple the SDK replaces when one is added)."""
    return getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())


def stock_exporter(processor: Any) -> Any:
    """The exporter of a stock ``BatchSpanProcessor`` if it is a stock OTLP one, else None."""
    if type(processor) is not BatchSpanProcessor:
        return None
    exporter = getattr(getattr(processor, "_batch_processor", None), "_exporter", None)
    grpc_class, http_class = _stock_classes()
    if exporter is None or type(exporter) not in (grpc_class, http_class):
        return None
    return exporter


def watch(provider: TracerProvider) -> None:
    """Adopt the provider's stock pipelines when its processors changed since the last look.

    Called for every span handed to the application's provider: one attribute read and an
    identity test when nothing changed.
    """
    processors = _processors(provider)
    if processors is _seen[0]:
        return
    with _lock:
        if processors is not _seen[0]:
            if _settings.read("FLOWTRACE_OTEL_FAST_EXPORT"):  # encoding.FAST_EXPORT_ENV
                adopt(provider)
            _seen[0] = processors


def adopt(provider: TracerProvider) -> int:
    """Put our spans on the fast encoder in each stock OTLP pipeline of ``provider``.

    Returns how many exporters take the fast path now (adopted before or now).
    """
    count = 0
    for processor in _processors(provider):
        exporter = stock_exporter(processor)
        if exporter is None:
            continue
        if exporter in _ADOPTED or _adopt_exporter(exporter):
            count += 1
    return count


def adopted(exporter: Any) -> bool:
    """Whether ``exporter`` takes the fast path."""
    return exporter in _ADOPTED


def _adopt_exporter(exporter: Any) -> bool:
    """Change this one exporter object; False if it is not laid out as expected.

    The encoder is imported here, not with this module: only a program with a stock exporter
    (which imported protobuf and its transport already) gets this far.
    """
    grpc_class, _ = _stock_classes()
    if grpc_class is not None and type(exporter) is grpc_class:
        return _adopt_grpc(exporter)
    return _adopt_http(exporter)


def _adopt_grpc(exporter: Any) -> bool:
    """gRPC: the request as bytes, sent by the stock ``Export`` call with a bytes serializer."""
    from flowtrace_otel.otel import encoding, grpc_export  # noqa: PLC0415

    if any(name in exporter.__dict__ for name in _GRPC_OWN) \
            or not grpc_export.fast_grpc_ready(exporter):
        return False
    stub_class = grpc_export.RawTraceServiceStub

    def translate(data: Sequence[ReadableSpan]) -> Any:
        """Encoded bytes for our stub; the stock message for any other client."""
        if type(exporter._client) is stub_class:
            return encoding.encode_ours_fast(data)
        return type(exporter)._translate_data(exporter, data)

    _ADOPTED[exporter] = {"_stub": exporter._stub, "_translate_data": None}
    # order: a stub that accepts both request kinds first, then the bytes
    exporter._stub = stub_class
    exporter._client = stub_class(exporter._channel)
    exporter._translate_data = translate
    return True


def _adopt_http(exporter: Any) -> bool:
    """HTTP/protobuf: the stock ``export`` with the mixed encoder."""
    from flowtrace_otel.otel import encoding  # noqa: PLC0415

    if any(name in exporter.__dict__ for name in _HTTP_OWN) or not encoding.http_ready(exporter):
        return False

    def export(spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """The stock export, our spans encoded by hand."""
        return encoding.http_export(exporter, spans, encoding.encode_ours_fast)[0]

    _ADOPTED[exporter] = {"export": None}
    exporter.export = export
    return True


def release(provider: TracerProvider | None = None) -> None:
    """Give every adopted exporter (of ``provider``, or all) its stock attributes back."""
    with _lock:
        exporters = list(_ADOPTED) if provider is None else [
            e for e in (stock_exporter(p) for p in _processors(provider)) if e in _ADOPTED]
        for exporter in exporters:
            saved = _ADOPTED.pop(exporter)
            # reverse order: the stock message first, then the stock stub
            for name in ("_translate_data", "export"):
                if name in saved:
                    exporter.__dict__.pop(name, None)
            if "_stub" in saved:
                exporter._stub = saved["_stub"]
                try:
                    exporter._client = saved["_stub"](exporter._channel)
                except Exception as error:  # a stopped exporter: uninstrument must go on
                    log.debug("flowtrace_otel: stock stub not rebuilt: %r", error)
        _seen[0] = None
