"""The stock OTLP/gRPC span exporter, sending the hand-written encoder's bytes.

The stock exporter (``opentelemetry.exporter.otlp.proto.grpc``) sends
``_translate_data(spans)`` (an ``ExportTraceServiceRequest`` built by ``encode_spans``) through
``self._client.Export``, a ``unary_unary`` call on its channel whose request serializer is
``ExportTraceServiceRequest.SerializeToString``. :class:`RawTraceServiceStub` makes that same
call (same method path, response deserializer and options, read off the stock stub by a probe
at import) with a serializer that passes encoded bytes through, and
:class:`FastGrpcSpanExporter` hands it :func:`~flowtrace_otel.otel.encoding.encode_spans_fast`'s
bytes: the bytes on the wire are those the stock stub would serialize (the tests check it byte
for byte). Everything else is the stock exporter's own code: the channel (endpoint, TLS,
compression, channel options), the metadata (headers), the deadline, the retry loop (its
backoff, ``RetryInfo``, the channel rebuilt after ``UNAVAILABLE``), logging and metrics.

If the installed exporter is not laid out as expected (the probe fails), the stock stub and
encoder are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as _grpc_exporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from flowtrace_otel.otel.encoding import encode_spans_fast

__all__ = ["FastGrpcSpanExporter", "RawTraceServiceStub", "fast_grpc_ready"]


class _ProbeChannel:
    """A channel that records how a stub makes its ``unary_unary`` call."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def unary_unary(self, *args: Any, **kwargs: Any) -> object:
        """Record the call's arguments."""
        self.calls.append((args, dict(kwargs)))
        return object()


def _stock_export_call() -> tuple[str, dict[str, Any]] | None:
    """The stock stub's ``Export`` method path and ``unary_unary`` options, or None if unusual."""
    probe = _ProbeChannel()
    try:
        TraceServiceStub(probe)  # type: ignore[no-untyped-call]
    except Exception:  # another layout: stay stock
        return None
    if len(probe.calls) != 1:
        return None
    args, kwargs = probe.calls[0]
    method = args[0] if args else kwargs.pop("method", None)
    if len(args) > 1 or not isinstance(method, str) or not method.endswith("/Export") \
            or "request_serializer" not in kwargs:
        return None
    kwargs.pop("request_serializer")
    return method, kwargs


_STOCK_CALL = _stock_export_call()


def _serialize(request: Any) -> bytes:
    """Encoded request bytes as they are; a protobuf request (the stock path's) serialized."""
    if type(request) is bytes:
        return request
    serialized: bytes = request.SerializeToString()
    return serialized


class RawTraceServiceStub:
    """The stock ``TraceServiceStub``'s ``Export`` call, taking the encoded request bytes.

    The last error its call raised is kept in ``errors`` (a one-item list that the exporter
    shares with the stub it makes after ``UNAVAILABLE``), for failure reports.
    """

    def __init__(self, channel: Any, errors: list[Exception | None] | None = None) -> None:
        """Make the ``unary_unary`` call on ``channel`` as the stock stub does."""
        assert _STOCK_CALL is not None
        method, options = _STOCK_CALL
        self._call = channel.unary_unary(method, request_serializer=_serialize, **options)
        self.errors: list[Exception | None] = errors if errors is not None else [None]

    def Export(self, request: Any, **kwargs: Any) -> Any:  # the stock stub's name
        """Send one export request (bytes, or a protobuf message)."""
        try:
            result = self._call(request, **kwargs)
        except Exception as error:
            self.errors[0] = error
            raise
        self.errors[0] = None
        return result


def fast_grpc_ready(exporter: Any) -> bool:
    """Whether ``exporter`` has the stock gRPC exporter's parts the fast path relies on."""
    stock: Any = _grpc_exporter.OTLPSpanExporter
    return (_STOCK_CALL is not None and callable(getattr(stock, "_export", None))
            and callable(getattr(stock, "_initialize_channel_and_stub", None))
            and callable(getattr(stock, "_translate_data", None))
            and getattr(exporter, "_stub", None) is TraceServiceStub
            and hasattr(exporter, "_channel") and hasattr(exporter, "_client"))


_Base: Any = _grpc_exporter.OTLPSpanExporter


class FastGrpcSpanExporter(_Base):  # type: ignore[misc]
    """The stock OTLP/gRPC span exporter, its requests encoded by ``encode_spans_fast``.

    Constructor, environment variables, channel, metadata, compression, deadline, retries,
    logging, metrics and shutdown are the stock exporter's; only the encoding and the request
    serializer differ. ``last_failure`` says why the last export failed ('' after a success).
    """

    last_failure = ""

    def _initialize_channel_and_stub(self) -> None:
        """The stock channel and stub (also after ``UNAVAILABLE``), then our stub on it."""
        super()._initialize_channel_and_stub()
        if fast_grpc_ready(self):
            errors = self.__dict__.setdefault("_flowtrace_errors", [None])
            self._client = RawTraceServiceStub(self._channel, errors)

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        """The request for ``data``: encoded bytes for our stub, else the stock message."""
        if type(self._client) is RawTraceServiceStub:
            return encode_spans_fast(data)
        return super()._translate_data(data)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export as the stock exporter does, remembering why it failed."""
        self.last_failure = ""
        errors = self.__dict__.get("_flowtrace_errors")
        if errors:
            errors[0] = None
        result: SpanExportResult = super().export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.last_failure = grpc_failure_text(self)
        return result


def grpc_failure_text(exporter: Any) -> str:
    """Why a gRPC export failed: the status and its details, or the shutdown."""
    if getattr(exporter, "_shutdown", False):
        return "the exporter was shut down"
    errors = getattr(getattr(exporter, "_client", None), "errors", None) or [None]
    error = errors[0]
    if error is None:
        return ""
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if callable(code) and callable(details):
        status = code()
        return f"gRPC {getattr(status, 'name', status)}: {details()}"
    return repr(error)

