"""The hand-written OTLP encoder gives the stock encoder's bytes, and its exporter sends them."""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from flowtrace_otel.otel import encoding
from flowtrace_otel.otel.encoding import FastOTLPSpanExporter, encode_spans_fast
from flowtrace_otel.testing import OtlpReceiver

_BENCH = importlib.util.spec_from_file_location(
    "encode_bench", Path(__file__).resolve().parent.parent / "bench" / "encode_bench.py")
assert _BENCH is not None and _BENCH.loader is not None
encode_bench = importlib.util.module_from_spec(_BENCH)
_BENCH.loader.exec_module(encode_bench)
make_spans = encode_bench.make_spans  # spans shaped like the bridge's

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=40) | st.text(min_size=120, max_size=300) | st.sampled_from(
    ["", "é", "日本語", "🙂 emoji", "a" * 125, "a" * 126, "ß" * 70, "x" * 3000])
FLOAT = st.floats(allow_nan=False)
SCALAR = TEXT | st.booleans() | INT64 | FLOAT
VALUE = (SCALAR | st.lists(TEXT, max_size=4) | st.lists(st.booleans(), max_size=4)
         | st.lists(INT64, max_size=4).map(tuple) | st.lists(FLOAT, max_size=4))
KEY = st.text(max_size=30) | st.sampled_from(
    ["code.function.name", "code.file.path", "code.line.number", "flowtrace.arg.self",
     "flowtrace.return", "thread.id", "thread.name", "k" * 2100])
ATTRS = st.dictionaries(KEY, VALUE, max_size=10)
TIME = st.integers(min_value=0, max_value=2**64 - 1)
TRACE_ID = st.integers(min_value=1, max_value=2**128 - 1)
SPAN_ID = st.integers(min_value=1, max_value=2**64 - 1)

RESOURCES = [Resource.create({"service.name": "svc"}), Resource({"service.name": "other"},
                                                                   "https://schema/1"),
             Resource({}), Resource({"service.name": "svc", "n": 1, "list": ["a", "b"]})]
SCOPES = [InstrumentationScope("flowtrace_otel", "0.1.0"), None,
          InstrumentationScope("lib", None, "https://schema/s", {"scope.attr": True}),
          InstrumentationScope("", "")]


@st.composite
def contexts(draw: Any) -> SpanContext:
    """A span context, remote or not, with or without trace state."""
    entries = draw(st.lists(st.tuples(st.sampled_from(["vendor", "a", "b@x"]),
                                      st.sampled_from(["1", "v=x", "zz"])), max_size=2,
                            unique_by=lambda e: e[0]))
    return SpanContext(draw(TRACE_ID), draw(SPAN_ID), draw(st.booleans()),
                       TraceFlags(draw(st.sampled_from([0, 1]))), TraceState(entries))


@st.composite
def events(draw: Any) -> Event:
    """An event with attributes."""
    return Event(draw(TEXT), draw(ATTRS), timestamp=draw(TIME))


@st.composite
def links(draw: Any) -> Link:
    """A link with attributes."""
    return Link(draw(contexts()), draw(ATTRS))


def _bounded(items: list[Any], maxlen: int | None) -> Any:
    """``items`` in a BoundedList that dropped some if ``maxlen`` is smaller."""
    if maxlen is None:
        return items
    bounded: BoundedList = BoundedList(maxlen)
    bounded.extend(items)
    return bounded


@st.composite
def spans(draw: Any) -> ReadableSpan:
    """A finished span with everything the OTLP Span message can carry."""
    status_code = draw(st.sampled_from(list(StatusCode)))
    description = draw(st.none() | TEXT) if status_code is StatusCode.ERROR else None
    attrs: Any = draw(ATTRS)
    max_attrs = draw(st.none() | st.integers(0, 3))
    if max_attrs is not None:
        from opentelemetry.attributes import BoundedAttributes
        attrs = BoundedAttributes(max_attrs, attrs, immutable=False)
    return ReadableSpan(
        name=draw(TEXT),
        context=draw(contexts()),
        parent=draw(st.none() | contexts()),
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=attrs,
        events=_bounded(draw(st.lists(events(), max_size=3)), draw(st.none() | st.integers(0, 2))),
        links=_bounded(draw(st.lists(links(), max_size=2)), draw(st.none() | st.integers(0, 1))),
        kind=draw(st.sampled_from(list(SpanKind))),
        status=Status(status_code, description),
        start_time=draw(st.none() | TIME),
        end_time=draw(st.none() | TIME),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


def assert_same(batch: list[ReadableSpan], compare_messages: bool = True) -> bytes:
    """Both encoders give the same bytes, and the same message once decoded.

    The fast encoder is run twice: reading ``ReadableSpan`` fields directly (its fast path)
    and through the public properties (spans of other classes, or another SDK layout).
    """
    stock = encode_spans(batch)
    fast = encode_spans_fast(batch)
    assert encoding._PRIVATE_LAYOUT
    encoding._PRIVATE_LAYOUT = False
    try:
        assert encode_spans_fast(batch) == fast
    finally:
        encoding._PRIVATE_LAYOUT = True
    assert fast == stock.SerializeToString()
    if compare_messages:
        assert ExportTraceServiceRequest.FromString(fast) == stock
    return fast


def span(attributes: Any = None, **kwargs: Any) -> ReadableSpan:
    """A plain span with the given attributes."""
    context = SpanContext(0x1234, 0x5678, False, TraceFlags(1))
    return ReadableSpan(name=kwargs.pop("name", "f"), context=context,
                        resource=kwargs.pop("resource", RESOURCES[0]), attributes=attributes,
                        start_time=10, end_time=20, **kwargs)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans(), max_size=6))
def test_generated_batches_match_the_stock_encoder(batch: list[ReadableSpan]) -> None:
    assert_same(batch)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(KEY, st.floats(allow_nan=True, allow_infinity=True), min_size=1))
def test_nan_and_infinities_are_the_same_bytes(attrs: dict[str, float]) -> None:
    decoded = ExportTraceServiceRequest.FromString(assert_same([span(attrs)], False))
    values = decoded.resource_spans[0].scope_spans[0].spans[0].attributes
    for kv in values:
        expected = attrs[kv.key]
        got = kv.value.double_value
        assert (math.isnan(got) and math.isnan(expected)) or got == expected


def test_the_bridge_shaped_batch_matches_and_decodes() -> None:
    batch = make_spans(512)
    decoded = ExportTraceServiceRequest.FromString(assert_same(batch))
    assert len(decoded.resource_spans) == 1
    assert len(decoded.resource_spans[0].scope_spans) == 1
    sent = decoded.resource_spans[0].scope_spans[0].spans
    assert len(sent) == 512
    assert sent[7].events[0].name == "exception"
    assert sent[7].status.code == 2
    assert sent[0].parent_span_id == b"" and len(sent[1].parent_span_id) == 8
    assert {kv.key for kv in sent[1].attributes} >= {"code.function.name", "thread.id"}


def test_edge_values() -> None:
    attrs = {"": "", "empty": "", "unicode": "héllo wörld 日本 🙂", "neg": -1,
             "min": -(2**63), "max": 2**63 - 1, "zero": 0, "big": 2**40, "f": -0.0,
             "t": True, "fl": False, "seq": ["a", "", "é"], "ints": (1, -2, 2**62),
             "none": None, "bytes": b"\x00\xff", "nested": {"a": 1, "b": [True, None]},
             "empty_seq": [], "mixed": [1, "a", 2.5, None]}
    decoded = ExportTraceServiceRequest.FromString(assert_same([span(attrs)]))
    got = {kv.key: kv.value for kv in decoded.resource_spans[0].scope_spans[0].spans[0].attributes}
    assert got["min"].int_value == -(2**63)
    assert got["unicode"].string_value == attrs["unicode"]
    assert got[""].WhichOneof("value") == "string_value"
    assert got["none"].WhichOneof("value") is None


class MySpan(ReadableSpan):
    """A span class of someone else's: read through its properties."""

    @property
    def name(self) -> str:
        return "renamed"


def test_span_subclasses_are_read_through_their_properties() -> None:
    batch = [MySpan("f", SpanContext(1, 2, False), attributes={"a": 1}, start_time=1)]
    decoded = ExportTraceServiceRequest.FromString(assert_same(batch))
    assert decoded.resource_spans[0].scope_spans[0].spans[0].name == "renamed"


def test_the_sdk_layout_probe_holds_for_the_installed_sdk() -> None:
    assert encoding._private_layout()


def test_empty_batch_and_missing_parent_and_times() -> None:
    assert encode_spans_fast([]) == b""
    assert_same([span({}, name="")])
    assert_same([ReadableSpan(name="x", context=SpanContext(1, 2, False),
                              resource=RESOURCES[1])])


@pytest.mark.parametrize("bad", [object(), 2**63, -(2**63) - 1, "\ud800", [1, object()],
                                 [2**64]])
def test_values_the_stock_encoder_skips_are_skipped_and_logged(
        bad: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        fast = assert_same([span({"before": 1, "bad": bad, "after": "x"})])
    keys = [kv.key for kv in
            ExportTraceServiceRequest.FromString(fast).resource_spans[0].scope_spans[0]
            .spans[0].attributes]
    assert keys == ["before", "after"]
    assert any(r.name == encoding.__name__ and "bad" in r.getMessage() for r in caplog.records)


def test_an_unencodable_name_fails_the_batch_as_in_the_stock_encoder() -> None:
    with pytest.raises(Exception):
        encode_spans([span(name="\ud800")])
    with pytest.raises(UnicodeEncodeError):
        encode_spans_fast([span(name="\ud800")])


def test_equal_resources_and_scopes_are_grouped_in_first_seen_order() -> None:
    twin = Resource.create({"service.name": "svc"})
    assert twin == RESOURCES[0] and twin is not RESOURCES[0]
    scope_twin = InstrumentationScope("flowtrace_otel", "0.1.0")
    batch = [span({"n": 1}, resource=RESOURCES[2]),
             span({"n": 2}, resource=RESOURCES[0], instrumentation_scope=SCOPES[0]),
             span({"n": 3}, resource=twin, instrumentation_scope=scope_twin),
             span({"n": 4}, resource=RESOURCES[2], instrumentation_scope=SCOPES[2]),
             span({"n": 5}, resource=twin, instrumentation_scope=None)]
    decoded = ExportTraceServiceRequest.FromString(assert_same(batch))
    shape = [[len(s.spans) for s in rs.scope_spans] for rs in decoded.resource_spans]
    assert shape == [[1, 1], [2, 1]]


def test_caches_overflow_without_changing_the_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoding, "_KEYS_MAX", 3)
    monkeypatch.setattr(encoding, "_INTS_MAX", 2)
    monkeypatch.setattr(encoding, "_OBJECTS_MAX", 2)
    resources = [Resource({"i": i}) for i in range(5)]
    batch = [span({f"k{i}": 10**6 + i, f"s{i % 2}": "v" * i, "thread.id": 2**50 + i % 3},
                  resource=resources[i % 5]) for i in range(40)]
    assert_same(batch)
    assert_same(batch)  # again, with whatever the caches kept
    assert len(encoding._OBJECTS) <= 2 and len(encoding._INTS) <= 2


def test_a_cached_resource_is_not_confused_with_a_new_one_at_the_same_address() -> None:
    first = assert_same([span({"a": 1}, resource=Resource({"gen": 1}))])
    second = assert_same([span({"a": 1}, resource=Resource({"gen": 2}))])
    assert first != second


# --- the exporter ------------------------------------------------------------------------------
@pytest.fixture
def receiver() -> Any:
    """A live OTLP/HTTP receiver (HTTP only)."""
    with OtlpReceiver(grpc=False) as running:
        yield running


def test_fast_exporter_sends_what_the_stock_exporter_sends(receiver: OtlpReceiver) -> None:
    batch = make_spans(50)
    url = receiver.http_endpoint + "/v1/traces"
    assert OTLPSpanExporter(endpoint=url).export(batch) is SpanExportResult.SUCCESS
    stock = receiver.wait_for_spans(50)
    receiver.clear()
    exporter = FastOTLPSpanExporter(endpoint=url, timeout=5)
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    assert receiver.wait_for_spans(50) == stock
    assert len(stock) == 50
    exporter.shutdown()
    assert exporter.export(batch) is SpanExportResult.FAILURE


def test_fast_exporter_reads_the_standard_env(receiver: OtlpReceiver,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.http_endpoint + "/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    exporter = FastOTLPSpanExporter()
    assert exporter.export([span({"a": "b"})]) is SpanExportResult.SUCCESS
    assert receiver.wait_for_spans(1)[0]["attributes"] == {"a": "b"}


def test_fast_exporter_keeps_the_size_limit_and_reports_errors(receiver: OtlpReceiver) -> None:
    url = receiver.http_endpoint + "/v1/traces"
    small = FastOTLPSpanExporter(endpoint=url, max_request_size=10)
    assert small.export([span({"a": "b" * 50})]) is SpanExportResult.FAILURE
    receiver.status = 400  # a client error: no retry
    assert FastOTLPSpanExporter(endpoint=url).export([span()]) is SpanExportResult.FAILURE
    assert receiver.spans() == []


def test_fast_exporter_falls_back_to_the_stock_export_when_parts_are_missing(
        receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoding, "_STOCK_PARTS", ("no_such_name",))
    calls = []
    monkeypatch.setattr(encoding, "encode_spans_fast", lambda s: calls.append(s) or b"")
    exporter = FastOTLPSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces")
    assert exporter.export([span({"a": 1})]) is SpanExportResult.SUCCESS
    assert receiver.wait_for_spans(1)[0]["attributes"] == {"a": 1}
    assert calls == []


@pytest.mark.parametrize(("raw", "enabled"), [(None, True), ("1", True), ("0", False),
                                              ("false", False), (" OFF ", False), ("", True)])
def test_fast_export_switch(raw: str | None, enabled: bool,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    if raw is None:
        monkeypatch.delenv(encoding.FAST_EXPORT_ENV, raising=False)
    else:
        monkeypatch.setenv(encoding.FAST_EXPORT_ENV, raw)
    assert encoding.fast_export_enabled() is enabled


def test_the_encoder_bench_runs_and_finds_the_fast_encoder_faster() -> None:
    script = Path(__file__).resolve().parent.parent / "bench" / "encode_bench.py"
    proc = subprocess.run([sys.executable, str(script), "--repeats", "1", "--scale", "0.02"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    speedups = [float(x) for x in re.findall(r"stock / fast:\s+([\d.]+)x", proc.stdout)]
    assert len(speedups) == 2 and min(speedups) > 1.5, proc.stdout
    assert "bridge + FastOTLPSpanExporter" in proc.stdout
    assert re.search(r"stock / fast \(bridge\):\s+[\d.]+x", proc.stdout), proc.stdout
