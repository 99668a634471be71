"""The fast OTLP/gRPC exporter puts the stock exporter's request bytes on the wire, stock-sent."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from flowtrace_otel.otel import grpc_export, pipeline
from flowtrace_otel.otel.grpc_export import FastGrpcSpanExporter, RawTraceServiceStub
from flowtrace_otel.testing import OtlpReceiver
from tests.test_encoding import make_spans, spans


class RecordingChannel:
    """A gRPC channel stand-in: each call records the serialized request and its options."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, **options: Any) -> Any:
        """A callable that serializes the request as gRPC would, and records it."""
        def call(request: Any, **kwargs: Any) -> None:
            self.sent.append({"method": method, "bytes": request_serializer(request),
                              "deserializer": response_deserializer, "options": options,
                              "metadata": kwargs.get("metadata"),
                              "timeout": kwargs.get("timeout")})
        return call


def rich_batch() -> list[ReadableSpan]:
    """Spans with every field the OTLP Span message carries, over resources and scopes."""
    state = TraceState([("vendor", "v1"), ("other", "x")])
    remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(1), state)
    local = SpanContext(0x1234, 0x5678, False, TraceFlags(1), state)
    attributes = {"str": "text", "empty": "", "utf8": "héllo 日本 🙂", "long": "x" * 3000,
                  "int": 42, "neg": -(2**63), "max": 2**63 - 1, "float": 2.5, "bool": True,
                  "false": False, "strs": ["a", "", "é"], "ints": (1, -2, 2**40),
                  "floats": [0.5, -1.0], "bools": [True, False], "bytes": b"\x00\xff",
                  "none": None, "map": {"a": 1, "b": [True, None]}}
    bounded = BoundedAttributes(3, {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, immutable=False)
    events = BoundedList(2)
    events.extend([Event("exception", {"exception.type": "ValueError"}, timestamp=15),
                   Event("e2", {"n": 1}, timestamp=16), Event("dropped", timestamp=17)])
    links = BoundedList(1)
    links.extend([Link(remote, {"link.attr": "x"}), Link(local)])
    scopes = [InstrumentationScope("flowtrace_otel", "0.1.0"), None,
              InstrumentationScope("lib", "2", "https://schema/s", {"scope.attr": True})]
    resources = [Resource.create({"service.name": "svc"}),
                 Resource({"service.name": "other", "n": 1}, "https://schema/r")]
    batch = []
    for i, kind in enumerate(SpanKind):
        batch.append(ReadableSpan(
            name=f"span-{i}", context=SpanContext(0x1234 + i, 0x5678 + i, False,
                                                  TraceFlags(1), state),
            parent=remote if i % 2 else (local if i % 3 else None),
            resource=resources[i % 2], attributes=bounded if i == 1 else attributes,
            events=events if i < 3 else [Event("plain", timestamp=18)], links=links,
            kind=kind,
            status=[Status(StatusCode.ERROR, "boom"), Status(StatusCode.OK), Status()][i % 3],
            start_time=10 + i, end_time=20 + i, instrumentation_scope=scopes[i % 3]))
    return batch + make_spans(40)


def wire_bytes(exporter: Any, batch: list[ReadableSpan]) -> list[dict[str, Any]]:
    """What ``exporter`` sends for ``batch``, its stub rebuilt on a recording channel."""
    channel = RecordingChannel()
    exporter._client = type(exporter._client)(channel)
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    return channel.sent


def test_the_request_bytes_are_the_stock_exporters() -> None:
    options: dict[str, Any] = {"endpoint": "localhost:4317", "insecure": True, "timeout": 7,
                               "headers": {"authorization": "token", "x-k": "v"}}
    stock, fast = OTLPSpanExporter(**options), FastGrpcSpanExporter(**options)
    assert type(fast._client) is RawTraceServiceStub and type(stock._client) is TraceServiceStub
    batch = rich_batch()
    [sent_stock], [sent_fast] = wire_bytes(stock, batch), wire_bytes(fast, batch)
    assert sent_fast["bytes"] == stock._translate_data(batch).SerializeToString()
    assert sent_fast["bytes"] == sent_stock["bytes"]
    for key in ("method", "deserializer", "options", "metadata"):
        assert sent_fast[key] == sent_stock[key], key
    assert sent_fast["metadata"] == (("authorization", "token"), ("x-k", "v"))
    assert 0 < sent_fast["timeout"] <= 7 and 0 < sent_stock["timeout"] <= 7
    assert sent_fast["method"] == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), max_size=6))
def test_generated_batches_put_the_stock_bytes_on_the_wire(batch: list[ReadableSpan]) -> None:
    exporter = _shared_exporter()
    [sent] = wire_bytes(exporter, batch)
    assert sent["bytes"] == exporter_stock()._translate_data(batch).SerializeToString()


_EXPORTERS: dict[str, Any] = {}


def _shared_exporter() -> Any:
    """One fast exporter for the generated examples (no network is used)."""
    if "fast" not in _EXPORTERS:
        _EXPORTERS["fast"] = FastGrpcSpanExporter(endpoint="localhost:4317", insecure=True)
    return _EXPORTERS["fast"]


def exporter_stock() -> Any:
    """One stock exporter, for its ``_translate_data``."""
    if "stock" not in _EXPORTERS:
        _EXPORTERS["stock"] = OTLPSpanExporter(endpoint="localhost:4317", insecure=True)
    return _EXPORTERS["stock"]


@pytest.fixture
def receiver() -> Any:
    """A live OTLP receiver with its gRPC side."""
    with OtlpReceiver(grpc=True, keep_raw=True) as running:
        yield running


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
def test_a_real_grpc_receiver_gets_identical_requests(receiver: OtlpReceiver,
                                                      compression: grpc.Compression) -> None:
    batch = rich_batch()
    options = {"endpoint": receiver.grpc_endpoint, "insecure": True, "timeout": 10,
               "compression": compression, "headers": {"x-k": "v"}}
    stock = OTLPSpanExporter(**options)
    assert stock.export(batch) is SpanExportResult.SUCCESS
    assert stock.export(batch[:3]) is SpanExportResult.SUCCESS
    stock_requests = list(receiver.raw_requests)
    received = receiver.spans()
    receiver.clear()
    fast = FastGrpcSpanExporter(**options)
    assert fast.export(batch) is SpanExportResult.SUCCESS
    assert fast.export(batch[:3]) is SpanExportResult.SUCCESS
    assert receiver.raw_requests == stock_requests
    assert len(stock_requests) == 2
    assert receiver.spans() == received and len(received) == len(batch) + 3
    assert fast.last_failure == ""
    stock.shutdown()
    fast.shutdown()


def test_a_refused_export_fails_with_its_reason(receiver: OtlpReceiver) -> None:
    receiver.grpc_status = "INVALID_ARGUMENT"  # not retryable: one attempt
    fast = FastGrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=10)
    assert fast.export(make_spans(3)) is SpanExportResult.FAILURE
    assert fast.last_failure == "gRPC INVALID_ARGUMENT: refused by the test"
    assert receiver.attempts == 1 and receiver.spans() == []
    receiver.grpc_status = None
    assert fast.export(make_spans(3)) is SpanExportResult.SUCCESS
    assert fast.last_failure == ""
    fast.shutdown()
    assert fast.export(make_spans(3)) is SpanExportResult.FAILURE
    assert fast.last_failure == "the exporter was shut down"


def test_unavailable_is_retried_on_a_new_channel_with_our_stub(receiver: OtlpReceiver) -> None:
    receiver.grpc_status = "UNAVAILABLE"
    fast = FastGrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=20)
    first_channel = fast._channel

    def recover() -> None:
        receiver.wait_for_attempts(1)
        receiver.grpc_status = None

    helper = threading.Thread(target=recover)
    helper.start()
    batch = make_spans(5)
    assert fast.export(batch) is SpanExportResult.SUCCESS  # the stock retry loop, 2 attempts
    helper.join()
    assert receiver.attempts == 2
    assert fast._channel is not first_channel  # rebuilt after UNAVAILABLE, as stock
    assert type(fast._client) is RawTraceServiceStub
    assert receiver.raw_requests == [OTLPSpanExporter(
        endpoint="localhost:1", insecure=True)._translate_data(batch).SerializeToString()]
    fast.shutdown()


def test_an_unusual_stock_layout_keeps_the_stock_stub_and_encoder(
        receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpc_export, "_STOCK_CALL", None)
    fast = FastGrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
    assert type(fast._client) is TraceServiceStub
    assert fast.export(make_spans(2)) is SpanExportResult.SUCCESS
    assert len(receiver.wait_for_spans(2)) == 2
    fast.shutdown()


def test_the_probe_reads_the_installed_stock_stub() -> None:
    call = grpc_export._stock_export_call()
    assert call is not None
    method, options = call
    assert method == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    assert "response_deserializer" in options and "request_serializer" not in options


@pytest.mark.parametrize(("fast_env", "expected"), [(None, FastGrpcSpanExporter),
                                                    ("0", OTLPSpanExporter)])
def test_the_private_pipeline_uses_it_for_grpc(fast_env: str | None, expected: type,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317")
    if fast_env is None:
        monkeypatch.delenv("FLOWTRACE_OTEL_FAST_EXPORT", raising=False)
    else:
        monkeypatch.setenv("FLOWTRACE_OTEL_FAST_EXPORT", fast_env)
    exporter: Any = pipeline._otlp_exporter()
    assert type(exporter) is expected
    assert "_export" in exporter.__dict__  # the private jitter, kept
    assert exporter._timeout == pipeline.DEFAULT_EXPORT_TIMEOUT_S
    exporter.shutdown()
