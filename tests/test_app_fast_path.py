"""Our spans take the fast encoder in the app's stock OTLP pipelines: same bytes on the wire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from flowtrace_otel.otel import app_fast_path, encoding
from flowtrace_otel.otel.grpc_export import RawTraceServiceStub
from flowtrace_otel.testing import OtlpReceiver
from tests.test_grpc_export import rich_batch
from tests.test_otel_flask import instrument_command

PROBE = Path(__file__).parent / "otel_programs" / "fast_path_probe.py"
RESOURCE = Resource.create({"service.name": "svc"})


def app_spans() -> list[ReadableSpan]:
    """Spans the application makes with the SDK (``Span`` objects, not ours)."""
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app.web", "1.0")
    for i in range(3):
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER,
                                          attributes={"http.route": "/x", "i": i}) as span:
            span.add_event("hit", {"n": i})
            with provider.get_tracer("app.db").start_as_current_span("query") as inner:
                inner.set_status(Status(StatusCode.ERROR, "db down"))
    return list(memory.get_finished_spans())


def mixed_batch() -> list[ReadableSpan]:
    """The application's spans between ours, over several resources and scopes."""
    ours, theirs = rich_batch(), app_spans()
    assert len(theirs) == 6
    batch: list[ReadableSpan] = []
    for i, span in enumerate(ours):
        batch.append(span)
        if i % 8 == 0 and theirs:
            batch.append(theirs.pop())
    return batch + theirs


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A live OTLP receiver (HTTP and gRPC)."""
    with OtlpReceiver(grpc=True, keep_raw=True) as running:
        yield running
    app_fast_path.release()


def make_exporter(protocol: str, receiver: OtlpReceiver) -> Any:
    """A stock OTLP exporter of ``protocol`` pointed at the receiver."""
    if protocol == "grpc":
        return GrpcExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=10)
    return HttpExporter(endpoint=receiver.http_endpoint + "/v1/traces", timeout=10)


def through_batch_processor(exporter: Any, batch: list[ReadableSpan], adopt: bool) -> None:
    """Hand ``batch`` to a stock BatchSpanProcessor of a provider, then flush it."""
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    processor = BatchSpanProcessor(exporter, max_export_batch_size=10_000,
                                   max_queue_size=10_000, schedule_delay_millis=600_000)
    provider.add_span_processor(processor)
    if adopt:
        assert app_fast_path.adopt(provider) == 1
        assert app_fast_path.adopted(exporter)
    for span in batch:
        provider._active_span_processor.on_end(span)
    assert processor.force_flush(20_000)
    processor.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_receiver_gets_the_stock_bytes_and_only_our_spans_are_hand_encoded(
        protocol: str, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = mixed_batch()
    through_batch_processor(make_exporter(protocol, receiver), batch, adopt=False)
    stock = list(receiver.raw_requests)
    receiver.clear()

    by_hand: list[ReadableSpan] = []
    by_stock: list[ReadableSpan] = []
    fast_span, stock_span = encoding._span, encoding.stock_span_bytes
    monkeypatch.setattr(encoding, "_span", lambda s: by_hand.append(s) or fast_span(s))
    monkeypatch.setattr(encoding, "stock_span_bytes",
                        lambda s: by_stock.append(s) or stock_span(s))
    through_batch_processor(make_exporter(protocol, receiver), batch, adopt=True)

    assert len(stock) == 1 and receiver.raw_requests == stock
    ours = [s for s in batch if encoding.is_ours(s.instrumentation_scope)]
    assert by_hand == ours and len(ours) > 40
    assert by_stock == [s for s in batch if s not in ours] and len(by_stock) > 6
    app_scopes = [s.instrumentation_scope.name for s in by_stock  # type: ignore[union-attr]
                  if s.instrumentation_scope is not None]
    assert sorted(app_scopes).count("app.web") == 3 and app_scopes.count("app.db") == 3


class Custom(SpanProcessor):
    """An application's own processor."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class MyExporter(HttpExporter):
    """A subclass of the stock exporter: not the stock exporter."""


def test_other_processors_and_exporters_are_left_alone(receiver: OtlpReceiver) -> None:
    patched = make_exporter("grpc", receiver)
    patched.export = lambda spans: None  # someone changed this object already
    exporters = [make_exporter("grpc", receiver), InMemorySpanExporter(),
                 MyExporter(endpoint=receiver.http_endpoint + "/v1/traces"), patched]
    processors = [SimpleSpanProcessor(exporters[0]), BatchSpanProcessor(exporters[1]),
                  BatchSpanProcessor(exporters[2]), BatchSpanProcessor(exporters[3]), Custom()]
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    for processor in processors:
        provider.add_span_processor(processor)
    before = [dict(vars(e)) for e in exporters]
    assert app_fast_path.adopt(provider) == 0
    assert [dict(vars(e)) for e in exporters] == before
    assert not any(app_fast_path.adopted(e) for e in exporters)
    for processor in processors:
        processor.shutdown()


def test_release_gives_the_stock_attributes_back(receiver: OtlpReceiver) -> None:
    grpc_exporter, http_exporter = make_exporter("grpc", receiver), make_exporter(
        "http/protobuf", receiver)
    keys = [set(vars(grpc_exporter)), set(vars(http_exporter))]
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    for exporter in (grpc_exporter, http_exporter):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    assert app_fast_path.adopt(provider) == 2
    assert type(grpc_exporter._client) is RawTraceServiceStub
    assert "_translate_data" in vars(grpc_exporter) and "export" in vars(http_exporter)
    app_fast_path.release(provider)
    assert [set(vars(grpc_exporter)), set(vars(http_exporter))] == keys
    assert grpc_exporter._stub is TraceServiceStub
    assert type(grpc_exporter._client) is TraceServiceStub
    assert not app_fast_path.adopted(grpc_exporter) and not app_fast_path.adopted(http_exporter)
    provider.shutdown()


def test_watch_adopts_new_processors_unless_turned_off(
        receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    app_fast_path.watch(provider)  # no processor yet
    first = make_exporter("grpc", receiver)
    provider.add_span_processor(BatchSpanProcessor(first))
    app_fast_path.watch(provider)
    assert app_fast_path.adopted(first)
    monkeypatch.setenv(encoding.FAST_EXPORT_ENV, "0")
    second = make_exporter("http/protobuf", receiver)
    provider.add_span_processor(BatchSpanProcessor(second))
    app_fast_path.watch(provider)
    assert not app_fast_path.adopted(second)
    provider.shutdown()


def run_probe(protocol: str, receiver: OtlpReceiver, **extra: str) -> dict[str, Any]:
    """The probe program under opentelemetry-instrument; its JSON report."""
    env = {key: value for key, value in os.environ.items() if key != encoding.FAST_EXPORT_ENV}
    env.update({"FLOWTRACE_OTEL": "1", **receiver.env(protocol), "OTEL_SERVICE_NAME": "probe",
                "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "100", **extra})
    done = subprocess.run([instrument_command(), sys.executable, str(PROBE)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_under_opentelemetry_instrument(protocol: str, receiver: OtlpReceiver) -> None:
    report = run_probe(protocol, receiver)
    assert report["adopted"] == [True]
    # the application's processor still got real ReadableSpans, ours as the SDK's
    assert report["recorded"] == ["opentelemetry.sdk.trace.ReadableSpan"]
    spans = receiver.wait_for_spans(report["count"])
    names = sorted(s["name"] for s in spans)
    assert "app-span" in names and "work" in names and names.count("leaf") == 3
    work = next(s for s in spans if s["name"] == "work")
    app = next(s for s in spans if s["name"] == "app-span")
    assert work["parent_id"] == app["span_id"] and work["scope"] == "flowtrace_otel"


def test_under_opentelemetry_instrument_it_can_be_turned_off(receiver: OtlpReceiver) -> None:
    report = run_probe("grpc", receiver, **{encoding.FAST_EXPORT_ENV: "0"})
    assert report["adopted"] == [False]


def test_stopping_the_bridge_gives_the_exporter_back(receiver: OtlpReceiver) -> None:
    from flowtrace_otel import otel

    exporter = make_exporter("grpc", receiver)
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    app_fast_path.watch(provider)
    assert app_fast_path.adopted(exporter)
    otel.instrument(tracer_provider=TracerProvider(shutdown_on_exit=False))
    otel.uninstrument()
    assert not app_fast_path.adopted(exporter) and "_translate_data" not in vars(exporter)
    provider.shutdown()


def test_the_bench_measures_both_protocols_under_the_app_provider() -> None:
    script = Path(__file__).resolve().parent.parent / "bench" / "encode_bench.py"
    proc = subprocess.run([sys.executable, str(script), "--app", "--repeats", "1",
                           "--scale", "0.02"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    for label in ("app, grpc", "app, http", "private, grpc"):
        assert f"fast / stock ({label}): " in proc.stdout, proc.stdout
    assert "app-fast-grpc" in proc.stdout and "(0 spans" not in proc.stdout
