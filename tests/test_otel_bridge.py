"""The bridge in-process: span structure, attributes, exceptions, sampling, size control."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import StatusCode, get_current_span

from flowtrace_otel import monitoring as m
from flowtrace_otel import otel
from flowtrace_otel.session import registry
from tests.otel_programs import workload

ONLY_WORKLOAD = ("*/otel_programs/*",)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()
    otel.uninstrument()


def run_traced(exporter: InMemorySpanExporter, action: Callable[[], Any], *,
               provider: TracerProvider | None = None, **options: Any) -> list[ReadableSpan]:
    """Run ``action`` with the bridge on (workload module only) and return the spans."""
    if provider is None:
        provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    options.setdefault("include", ONLY_WORKLOAD)
    otel.instrument(tracer_provider=provider, **options)
    try:
        action()
    finally:
        otel.uninstrument()
    return list(exporter.get_finished_spans())


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def parent_name(span: ReadableSpan, spans: list[ReadableSpan]) -> str | None:
    if span.parent is None:
        return None
    for other in spans:
        if other.context.span_id == span.parent.span_id:
            return other.name
    return "<outside>"


def test_span_per_call_with_code_attributes_args_and_result(exporter: InMemorySpanExporter) -> None:
    spans = run_traced(exporter, lambda: workload.handler(7, "a", "b", rush=True))
    names = by_name(spans)
    assert set(names) == {"handler", "Store.save", "validate"}
    save = names["Store.save"]
    assert save.attributes["code.function.name"] == "tests.otel_programs.workload.Store.save"
    assert save.attributes["code.file.path"].endswith("otel_programs/workload.py")
    assert save.attributes["code.line.number"] == workload.Store.save.__code__.co_firstlineno
    assert save.attributes["flowtrace.arg.key"] == "'order-7'"
    assert save.attributes["flowtrace.arg.value"] == "7"
    assert save.attributes["flowtrace.arg.self"] == "<Store>"
    assert save.attributes["flowtrace.arg.api_key"] == "[REDACTED]"
    assert save.attributes["flowtrace.return"] == "True"
    handler = names["handler"]
    assert handler.attributes["flowtrace.arg.items"] == "('a', 'b')"
    assert handler.attributes["flowtrace.arg.flags"] == "{'rush': True}"
    assert handler.attributes["flowtrace.return"] == "{'id': 7, 'items': 2}"
    assert parent_name(save, spans) == "handler"
    assert parent_name(names["validate"], spans) == "Store.save"
    assert handler.parent is None
    assert len({span.context.trace_id for span in spans}) == 1


def test_times_nest_and_come_from_the_recorded_clock(exporter: InMemorySpanExporter) -> None:
    spans = run_traced(exporter, lambda: workload.handler(1))
    names = by_name(spans)
    outer, inner = names["handler"], names["Store.save"]
    assert outer.start_time <= inner.start_time <= inner.end_time <= outer.end_time
    import time
    assert abs(outer.start_time - time.time_ns()) < 60e9


def test_escaping_exception_is_error_with_event_caught_one_is_quiet(
        exporter: InMemorySpanExporter) -> None:
    spans = run_traced(exporter, workload.catches)
    names = by_name(spans)
    fails, catches = names["fails"], names["catches"]
    assert fails.status.status_code is StatusCode.ERROR
    assert fails.status.description == "ValueError: cannot: first"
    (event,) = fails.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "cannot: first"
    assert "in fails" in event.attributes["exception.stacktrace"]
    assert catches.status.status_code is StatusCode.UNSET
    assert [e.name for e in catches.events] == ["flowtrace.exception_handled"]
    assert catches.events[0].attributes["exception.type"] == "ValueError"


def test_propagated_exception_marks_every_frame_it_left(exporter: InMemorySpanExporter) -> None:
    def run() -> None:
        with pytest.raises(ValueError):
            workload.propagates()

    spans = run_traced(exporter, run)
    assert {s.name: s.status.status_code for s in spans} == {
        "fails": StatusCode.ERROR, "propagates": StatusCode.ERROR}


def test_outermost_call_is_child_of_the_current_user_span(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider()

    def run() -> None:
        with provider.get_tracer("app").start_as_current_span("request"):
            workload.validate(1)

    spans = run_traced(exporter, run, provider=provider)
    names = by_name(spans)
    assert parent_name(names["validate"], spans) == "request"
    assert names["validate"].context.trace_id == names["request"].context.trace_id


def test_library_spans_nest_inside_the_call_and_callbacks_inside_them(
        exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider()

    def run() -> None:
        workload.with_library_span(provider.get_tracer("library"))

    spans = run_traced(exporter, run, provider=provider)
    names = by_name(spans)
    assert parent_name(names["library.call"], spans) == "with_library_span"
    assert parent_name(names["callback"], spans) == "library.call"
    assert len({span.context.trace_id for span in spans}) == 1


def test_user_code_can_annotate_its_call_span(exporter: InMemorySpanExporter) -> None:
    spans = run_traced(exporter, workload.annotate)
    span = by_name(spans)["annotate"]
    assert span.attributes["app.user"] == "ada"
    assert [e.name for e in span.events] == ["checkpoint"]


def test_unsampled_traces_make_no_spans(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    spans = run_traced(exporter, lambda: workload.handler(1), provider=provider)
    assert spans == []


def test_repeated_siblings_fold_into_an_aggregate(exporter: InMemorySpanExporter) -> None:
    spans = run_traced(exporter, lambda: workload.parse_many(1000), fold_after=5)
    lines = [s for s in spans if s.name == "parse_line"]
    assert len(lines) == 5
    (fold,) = [s for s in spans if s.name.startswith("parse_line ×")]
    assert fold.name == "parse_line ×995 (folded)"
    assert fold.attributes["flowtrace.folded.count"] == 995
    assert fold.attributes["flowtrace.folded.min_ms"] <= fold.attributes["flowtrace.folded.max_ms"]
    root = by_name(spans)["parse_many"]
    assert root.attributes["flowtrace.folded_calls"] == 995
    assert parent_name(fold, spans) == "parse_many"


def test_span_budget_keeps_root_and_counts_what_it_dropped(exporter: InMemorySpanExporter) -> None:
    spans = run_traced(exporter, lambda: workload.wide(100), max_spans_per_trace=50,
                       fold_after=0)
    assert len(spans) == 51  # 50 kept calls and the root, always kept
    root = by_name(spans)["wide"]
    assert root.parent is None
    assert root.attributes["flowtrace.dropped_calls"] == 200 - 50


def test_min_duration_drops_fast_leaves_but_keeps_errors(exporter: InMemorySpanExporter) -> None:
    spans = run_traced(exporter, workload.catches, min_duration_us=10_000_000)
    assert {s.name for s in spans} == {"catches", "fails"}
    assert by_name(spans)["catches"].attributes.get("flowtrace.dropped_calls") is None


def test_threads_executor_tasks_and_generators_keep_their_parents(
        exporter: InMemorySpanExporter) -> None:
    def run() -> None:
        workload.spawns_thread()
        workload.submits_work()
        workload.run_async()
        workload.consume()

    spans = run_traced(exporter, run, fold_after=0)
    parents = {(s.name, parent_name(s, spans)) for s in spans}
    assert ("callback", "spawns_thread") in parents
    assert [parent_name(s, spans) for s in spans if s.name == "callback"
            and parent_name(s, spans) == "submits_work"] == ["submits_work"] * 3
    assert ("fan_out", "run_async") in parents
    assert [parent_name(s, spans) for s in spans if s.name == "fetch"] == ["fan_out"] * 2
    assert ("numbers", "consume") in parents
    assert ("leaf_a", "consume") in parents
    fetch = next(s for s in spans if s.name == "fetch")
    assert fetch.attributes["flowtrace.resumes"] == 1
    assert "flowtrace.task" in fetch.attributes


def test_instrument_twice_returns_the_same_bridge_and_uninstrument_restores_context() -> None:
    from opentelemetry import context

    before = context._RUNTIME_CONTEXT
    first = otel.instrument(tracer_provider=TracerProvider(), include=ONLY_WORKLOAD)
    try:
        assert otel.instrument() is first
        assert context._RUNTIME_CONTEXT is not before
    finally:
        otel.uninstrument()
    assert context._RUNTIME_CONTEXT is before
    assert not otel.is_instrumented()


def test_unknown_option_is_rejected_by_name() -> None:
    with pytest.raises(TypeError, match="colour"):
        otel.instrument(colour=True)
    assert not otel.is_instrumented()


def test_the_export_machinery_is_never_traced_even_when_everything_is_included() -> None:
    import json

    import requests
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from flowtrace_otel.filters import CodeFilter

    everything = CodeFilter(include=("*",))
    for function in (OTLPSpanExporter.export, BatchSpanProcessor.on_end, requests.post,
                     TracerProvider.__init__):
        assert not everything.is_user_code(function.__code__), function
    assert everything.is_user_code(json.dumps.__code__)  # "*" really includes the rest


def test_calls_that_will_be_folded_or_over_budget_capture_nothing(
        exporter: InMemorySpanExporter) -> None:
    spans = run_traced(exporter, lambda: workload.parse_many(50), fold_after=5)
    kept = [s for s in spans if s.name == "parse_line"]
    assert [s.attributes["flowtrace.arg.line"] for s in kept] == [
        f"' line {i} '" for i in range(5)]
    assert all("flowtrace.values" not in s.attributes for s in spans)
    exporter.clear()
    spans = run_traced(exporter, lambda: workload.wide(10), max_spans_per_trace=3, fold_after=0)
    assert len(spans) == 4
    assert all("flowtrace.arg.i" in s.attributes for s in spans if s.name != "wide")


def test_a_kept_call_without_values_says_so(exporter: InMemorySpanExporter) -> None:
    def run() -> None:
        workload.catches_after(4)

    spans = run_traced(exporter, run, max_spans_per_trace=2, fold_after=0)
    failed = [s for s in spans if s.name == "fails"]
    assert len(failed) == 1
    assert "flowtrace.arg.reason" not in failed[0].attributes
    assert failed[0].attributes["flowtrace.values"].startswith("not captured")
    assert failed[0].status.status_code is StatusCode.ERROR


class EveryOther(Sampler):
    """Samples the 1st, 3rd, 5th... root it is asked about."""

    def __init__(self) -> None:
        self.asked = 0

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None,  # type: ignore[no-untyped-def]
                      links=None, trace_state=None) -> SamplingResult:
        self.asked += 1
        return SamplingResult(Decision.RECORD_AND_SAMPLE if self.asked % 2 else Decision.DROP)

    def get_description(self) -> str:
        return "EveryOther"


ROOTS = (workload.consume, workload.first_number, workload.spawns_thread, workload.submits_work,
         workload.run_async, workload.catches, lambda: workload.handler(3, "x"))


def shape(spans: list[ReadableSpan]) -> list[tuple[str, str | None, str]]:
    return sorted((s.name, parent_name(s, spans), s.status.status_code.name) for s in spans)


def test_unsampled_traces_between_sampled_ones_change_nothing_in_them(
        exporter: InMemorySpanExporter) -> None:
    """Calls of unsampled traces (shared ghost records) leave sampled traces exactly as alone."""
    monitors: list[m.Monitor] = []

    def twice_each() -> None:
        for root in ROOTS:
            root()  # sampled
            root()  # not sampled: generators, threads, tasks, exceptions run as ghosts
        assert registry.monitor is not None
        monitors.append(registry.monitor)

    alone = shape(run_traced(exporter, lambda: [root() for root in ROOTS]))
    exporter.clear()
    provider = TracerProvider(sampler=EveryOther())
    mixed = run_traced(exporter, twice_each, provider=provider)
    assert provider.sampler.asked == 2 * len(ROOTS)  # threads and tasks follow their starter
    assert shape(mixed) == alone
    ghosts = [info.ghost for _, info in monitors[0].infos.values() if info is not None]
    assert len(ghosts) > 10
    written = [g for g in ghosts if g.end or g._kids or g.status or g.ext
               or g._mark or g.suspended or g.resumes or g.task]
    assert written == []  # shared by every unrecorded call: never written, even at stop


def request_tree(spans: list[ReadableSpan]) -> list[list[tuple[str, str | None]]]:
    """For each library request span: it and its descendants as (name, parent name), sorted."""
    children: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    trees = []
    for request in (s for s in spans if s.name == "GET /view"):
        tree, todo = [("GET /view", None)], [request]
        while todo:
            node = todo.pop()
            for child in children.get(node.context.span_id, []):
                tree.append((child.name, node.name))
                todo.append(child)
        trees.append(sorted(tree, key=str))
    return trees


ONE_REQUEST = sorted([("GET /view", None), ("leaf_a", "view"), ("leaf_b", "view"),
                      ("view", "GET /view")], key=str)


def test_a_server_loop_in_user_code_keeps_every_request_whole(
        exporter: InMemorySpanExporter) -> None:
    """Each library span's trace has its own span budget; its outermost call is never folded."""
    provider = TracerProvider()
    tracer = provider.get_tracer("library")

    def handle(i: int) -> None:  # the library serving a request (test code is not traced)
        with tracer.start_as_current_span("GET /view", context=Context()):  # a trace of its own
            workload.view(i)

    spans = run_traced(exporter, lambda: workload.serve(30, handle), provider=provider,
                       max_spans_per_trace=5, fold_after=2)
    assert request_tree(spans) == [ONE_REQUEST] * 30
    assert len({s.context.trace_id for s in spans}) == 31
    assert by_name(spans)["serve"].parent is None


class SampleAllButServe(Sampler):
    """Follows a valid parent; without one, drops ``serve`` and samples everything else."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None,  # type: ignore[no-untyped-def]
                      links=None, trace_state=None) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            sampled = parent.trace_flags.sampled
        else:
            sampled = name != "serve"
        return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP)

    def get_description(self) -> str:
        return "SampleAllButServe"


def test_requests_served_by_threads_of_an_unsampled_loop_follow_their_own_span(
        exporter: InMemorySpanExporter) -> None:
    """Request threads started while an unsampled user loop runs are sampled by their span."""
    provider = TracerProvider(sampler=SampleAllButServe())
    tracer = provider.get_tracer("library")

    def request(i: int) -> None:
        with tracer.start_as_current_span("GET /view"):
            workload.view(i)

    def spawn(i: int) -> None:  # a threaded server: Thread.start under the user's open loop
        worker = threading.Thread(target=request, args=(i,))
        worker.start()
        worker.join()

    def plain_thread(i: int) -> None:  # a thread with no library span: stays unsampled
        worker = threading.Thread(target=workload.view, args=(i,))
        worker.start()
        worker.join()

    spans = run_traced(exporter, lambda: (workload.serve(3, spawn),
                                          workload.serve(3, plain_thread)), provider=provider)
    assert request_tree(spans) == [ONE_REQUEST] * 3
    assert len(spans) == 3 * len(ONE_REQUEST)
