"""Spans of the private pipeline are built on its export worker, and are the same spans.

Issue 13 item 8: at a call's end the user's thread only decides and queues the makings of the
span (:mod:`flowtrace_otel.otel.offthread`); the export worker builds the ``ReadableSpan``.
Processors of the application's provider still get built spans in ``on_end``, on the thread
that ended the call.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from flowtrace_otel import otel
from flowtrace_otel import records as r
from flowtrace_otel.otel import offthread, pipeline, spans
from flowtrace_otel.otel.bridge import Bridge
from flowtrace_otel.otel.export_queue import TraceQueue
from flowtrace_otel.otel.shaping import CallState, Fold
from flowtrace_otel.testing import OtlpReceiver
from tests.otel_programs import workload

ONLY_WORKLOAD = ("*/otel_programs/*",)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """A live OTLP/HTTP receiver that the private pipeline (no application provider) sends to."""
    with OtlpReceiver(grpc=False) as running:
        for name in [n for n in os.environ if n.startswith("OTEL_")]:
            monkeypatch.delenv(name)
        for name, value in running.env().items():
            monkeypatch.setenv(name, value)
        yield running
        otel.uninstrument()


@pytest.fixture
def built_on(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts every ``ReadableSpan`` constructed, by thread: ``main`` or ``other``."""
    counts: Counter[str] = Counter()
    stock = ReadableSpan.__init__
    main = threading.main_thread().ident

    def counting(self: ReadableSpan, *args: Any, **kwargs: Any) -> None:
        counts["main" if threading.get_ident() == main else "other"] += 1
        stock(self, *args, **kwargs)

    monkeypatch.setattr(ReadableSpan, "__init__", counting)
    return counts


def _traced_work() -> None:
    """A few traces: plain calls, an exception caught, folded siblings, annotations."""
    workload.handler(7, "a", "b", fast=True)
    workload.catches()
    workload.parse_many(12)
    workload.annotate()


def test_private_pipeline_builds_spans_on_the_export_worker(
        receiver: OtlpReceiver, built_on: Counter[str]) -> None:
    """No span is built on the program's thread; every span arrives, built by the worker."""
    assert threading.current_thread() is threading.main_thread()
    bridge = otel.instrument(include=ONLY_WORKLOAD)
    _traced_work()
    assert built_on["main"] == 0  # nothing was built at the calls' ends
    otel.uninstrument()
    names = Counter(span["name"] for span in receiver.spans())
    assert names["handler"] == names["catches"] == names["annotate"] == 1
    assert names["parse_line ×7 (folded)"] == 1  # fold_after=5 by default: 5 kept, 7 folded
    # (the fast encoder builds one probe span of its own, on the worker too)
    assert built_on["main"] == 0 and built_on["other"] >= sum(names.values())
    assert bridge.private_provider is not None


def test_switched_off_the_spans_are_built_at_the_calls_end(
        receiver: OtlpReceiver, built_on: Counter[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``FLOWTRACE_OTEL_BUILD_ON_WORKER=0``: the old path, spans built on the program's thread."""
    monkeypatch.setenv("FLOWTRACE_OTEL_BUILD_ON_WORKER", "0")
    otel.instrument(include=ONLY_WORKLOAD)
    _traced_work()
    assert built_on["main"] > 0 and built_on["other"] == 0
    otel.uninstrument()
    assert len(receiver.spans()) == built_on["main"]


def test_any_other_processor_gets_built_spans_in_on_end(
        receiver: OtlpReceiver, built_on: Counter[str]) -> None:
    """A processor beside the private queues gets real ReadableSpans at the call's end."""
    bridge = otel.instrument(include=ONLY_WORKLOAD)
    memory = InMemorySpanExporter()
    bridge.provider().add_span_processor(SimpleSpanProcessor(memory))
    ended_on: set[int] = set()
    stock_export = memory.export

    def export(batch: Any) -> Any:
        ended_on.add(threading.get_ident())
        return stock_export(batch)

    memory.export = export  # type: ignore[method-assign]
    workload.handler(7, "a")
    otel.uninstrument()
    assert ended_on == {threading.get_ident()}  # on_end ran on the calling thread
    mine = {span.name for span in memory.get_finished_spans()}
    assert mine == {"handler", "Store.save", "validate"}
    assert {span["name"] for span in receiver.spans()} == mine  # the queue got them too
    assert built_on["other"] == 0


def test_queued_spans_keep_no_user_object_alive(
        receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a trace waits in the queue, neither its records, their contexts nor an exception
    that left a call keep the program's objects alive (the queue holds rendered values)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # the worker waits: spans stay held
    bridge = _instrument_with_idle_worker()

    class Payload:
        pass

    held = Payload()
    in_context = weakref.ref(held)
    records_before = _live_records()
    token = otel_context.attach(otel_context.set_value("app.payload", held))
    del held
    try:
        workload.handler(1, "x")  # its records' contexts hold the payload
        workload.catches()  # an exception left fails(): the record held it during on_end
    finally:
        otel_context.detach(token)
    gc.collect()
    queues = pipeline.trace_queues(bridge.provider())
    assert sum(queue.held for queue in queues) == 5  # still queued, not exported yet
    assert in_context() is None
    assert _live_records() <= records_before  # no call record outlived its call
    otel.uninstrument()
    assert len(receiver.spans()) == 1 + 5


def _live_records() -> set[int]:
    """Ids of the call records alive now (ghosts and stand-ins, id 0, left out)."""
    return {id(obj) for obj in gc.get_objects()
            if type(obj).__name__ == "Record" and getattr(obj, "id", 0)}


def _instrument_with_idle_worker(**options: Any) -> Bridge:
    """Instrument, and send one trace: the export worker then runs and waits for its delay
    (the first trace wakes it at once); later traces stay queued until a flush."""
    bridge = otel.instrument(include=ONLY_WORKLOAD, **options)
    workload.validate(1)
    bridge.force_flush()
    return bridge


def test_a_late_child_does_not_change_its_queued_parents_counts(
        receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker reads a snapshot: calls dropped under a parent after the parent ended (a
    thread that outlived it) are not counted on the parent's span, as before."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    _instrument_with_idle_worker(max_spans_per_trace=1)  # the root's the only span kept
    go = threading.Event()
    late: list[threading.Thread] = []

    def late_work() -> None:
        go.wait(30)
        for i in range(8):
            workload.leaf_a(i)  # serve's calls (handed over), beyond the budget: dropped

    def start_late(i: int) -> None:
        late.append(threading.Thread(target=late_work))
        late[-1].start()

    workload.serve(1, start_late)  # ends now: its span is queued, not yet built
    go.set()
    late[0].join(30)
    otel.uninstrument()  # the worker builds serve's span only now
    by_name = {span["name"]: span for span in receiver.spans()}
    assert set(by_name) == {"validate", "serve"}
    assert "flowtrace.dropped_calls" not in by_name["serve"]["attributes"]


# --- the same spans ----------------------------------------------------------------------------

def _state(trace_id: int, span_id: int, **fields: Any) -> CallState:
    state = CallState(trace_id, True)
    state.span_id = span_id
    for name, value in fields.items():
        setattr(state, name, value)
    return state


def _record(info: r.CodeInfo, **fields: Any) -> r.Record:
    rec = r.Record.blank(info)
    rec.id, rec.start, rec.end, rec.status = 5, 1_000, 9_000, "returned"
    rec.thread = r.ThreadState()
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def _example(x: int, *rest: int, secret: str = "", **more: int) -> int:
    return x


def _records() -> list[tuple[r.Record, CallState]]:
    """Calls with every kind of content a span can have."""
    info = r.CodeInfo(_example.__code__, ())
    error = ValueError("bad")
    try:
        raise error
    except ValueError:
        pass
    args = (("x", "1", "p"), ("rest", "(2, 3)", "*"), ("secret", "'…'", "k"))
    user = {"attributes": {"app.user": "ada"},
            "events": [Event("checkpoint", {"step": 1}, timestamp=5)],
            "status": Status(StatusCode.OK)}
    return [
        (_record(info, args=args, result="1"), _state(1, 2)),
        (_record(info, result=r.NO_VALUES, task="Task-1", resumes=3, suspended=2_345_678,
                 status="closed"), _state(1, 3, dropped=4, folded=6)),
        (_record(info, status="raised", exc=("ValueError", "bad", id(error)), error=error,
                 caught=[("KeyError", "'k'")]), _state(1, 4, user=user)),
        (_record(info, status="unfinished", caught=[("OSError", "gone")]),
         _state(1, 5, user={"status": Status(StatusCode.ERROR, "mine")})),
    ]


@pytest.mark.parametrize("parent", ["none", "call", "library"])
def test_worker_built_span_equals_the_one_built_at_the_calls_end(parent: str) -> None:
    """Same name, ids, parent, attributes, events, status, times: field for field."""
    resource, scope = TracerProvider().resource, InstrumentationScope("flowtrace_otel", "1")
    flags = TraceFlags(TraceFlags.SAMPLED)
    for rec, state in _records():
        if parent == "library":
            state.parent_span = SpanContext(1, 77, False, flags)
        parent_context = {"none": None, "call": SpanContext(1, 99, False, flags),
                          "library": state.parent_span}[parent]
        expected = spans.build_span(rec, state, parent_context, 10**18, resource, scope)
        given: Any = 99 if parent == "call" else parent_context  # a parent call: its span id
        item = offthread.call_item(rec, state, given, 10**18, resource, scope)
        rec.error = None  # gone after on_end: the item must not need it
        built = offthread.build(item)
        assert built.to_json() == expected.to_json()
        assert built.resource is resource and built.instrumentation_scope is scope


def test_worker_built_fold_span_equals_the_old_one() -> None:
    resource, scope = TracerProvider().resource, InstrumentationScope("flowtrace_otel", "1")
    fold = Fold(r.CodeInfo(_example.__code__, ()))
    for start in (10, 30, 70):
        fold.add(start, start + start // 10)
    state = _state(5, 6)
    expected = spans.build_fold_span(fold, state, 8, 10**18, resource, scope)
    built = offthread.build(offthread.fold_item(fold, state, 8, 6, 10**18, resource, scope))
    assert built.to_json() == expected.to_json()


def test_the_queue_builds_items_at_export_and_counts_them_as_spans() -> None:
    """Items and spans share the queue, its whole-trace grouping and its accounting."""

    class Recorder:
        def __init__(self) -> None:
            self.batches: list[list[tuple[str, bool]]] = []

        def export(self, batch: Any) -> Any:
            self.batches.append([(s.name, isinstance(s, ReadableSpan)) for s in batch])
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    recorder = Recorder()
    queue = TraceQueue(recorder, limit=10, batch=100, delay_ms=60_000)  # type: ignore[arg-type]
    resource, scope = TracerProvider().resource, InstrumentationScope("flowtrace_otel", "1")
    rec, state = _records()[0]
    queue.put(offthread.call_item(rec, state, 2, 0, resource, scope), 1, False, False)
    assert queue.held == 1 and queue.lost_trace_ids() == {1}  # open: waiting for its root
    queue.put(offthread.call_item(rec, _state(1, 2), None, 0, resource, scope), 1, True, True)
    assert queue.force_flush(10_000)
    assert recorder.batches == [[("_example", True), ("_example", True)]]
    queue.shutdown(1000)
    assert queue.undelivered() == 0 and queue.lost_trace_ids() == set()


RICH_PROGRAM = textwrap.dedent('''
    import asyncio, threading
    from opentelemetry import trace

    def leaf(i):
        return i * 2

    def fails(n):
        raise KeyError(f"missing {n}")

    def recovers():
        try:
            fails(1)
        except KeyError:
            return "ok"

    def numbers(n):
        for i in range(n):
            yield leaf(i)

    async def fetch(n):
        await asyncio.sleep(0)
        return leaf(n)

    async def gather():
        return await asyncio.gather(fetch(1), fetch(2), fetch(3))

    def annotated():
        span = trace.get_current_span()
        span.set_attribute("app.step", "one")
        span.add_event("checkpoint", {"n": 1})

    def in_thread(k):
        return sum(leaf(i) for i in range(k))

    def request(n):
        recovers()
        total = sum(numbers(4))
        total += sum(asyncio.run(gather()))
        for i in range(12):
            leaf(i)
        worker = threading.Thread(target=in_thread, args=(3,), name="helper")
        worker.start()
        worker.join()
        annotated()
        if n == 2:
            fails(n)
        return total

    def main():
        for n in range(3):
            try:
                request(n)
            except KeyError:
                pass

    main()
''')

#: attributes that differ between any two runs (thread ids, measured durations)
_VOLATILE = ("thread.id", "flowtrace.suspended_ms", "flowtrace.folded.total_ms",
             "flowtrace.folded.min_ms", "flowtrace.folded.max_ms")


def _canonical(received: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """Each span as its content plus its ancestors' names, ids and times left out."""
    by_id = {span["span_id"]: span for span in received}

    def path(span: dict[str, Any]) -> tuple[str, ...]:
        names: list[str] = []
        parent = span["parent_id"]
        while parent is not None:
            assert parent in by_id, f"{span['name']}: its parent never arrived"
            names.append(by_id[parent]["name"])
            parent = by_id[parent]["parent_id"]
        return tuple(names)

    def content(span: dict[str, Any]) -> tuple[Any, ...]:
        attrs = {k: v for k, v in span["attributes"].items() if k not in _VOLATILE}
        events = [(e["name"], sorted(e["attributes"].items())) for e in span["events"]]
        return (span["name"], sorted(attrs.items()), events, span["status"],
                span["status_message"], span["kind"], path(span))

    return Counter(repr(content(span)) for span in received)  # type: ignore[misc]


def _run_rich(tmp_path: Path, build_on_worker: str) -> list[dict[str, Any]]:
    script = tmp_path / "rich.py"
    script.write_text(RICH_PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWTRACE", "OTEL_"))}
    with OtlpReceiver(grpc=False) as receiver:
        run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120,
                             env={**env, **receiver.env(), "FLOWTRACE_OTEL": "1",
                                  "FLOWTRACE_OTEL_MAX_SPANS": "60",  # 80 kept otherwise
                                  "FLOWTRACE_OTEL_BUILD_ON_WORKER": build_on_worker})
        assert run.returncode == 0 and run.stderr == "", run.stderr
        return receiver.spans()


def test_a_rich_program_exports_the_same_spans_both_ways(tmp_path: Path) -> None:
    """Threads, asyncio, generators, exceptions, folding, the span budget, annotations: the
    same spans, compared span for span (ids, times and thread ids differ between any runs)."""
    old = _run_rich(tmp_path, "0")
    new = _run_rich(tmp_path, "1")
    assert _canonical(new) == _canonical(old)
    assert len(new) == len(old) > 60  # 60 calls kept, and what is kept whatever the budget
    for received in (old, new):
        assert len({span["span_id"] for span in received}) == len(received)
        assert len({span["trace_id"] for span in received}) == 1  # main() is the root
        names = Counter(span["name"] for span in received)
        assert names["leaf ×7 (folded)"] == 3 and names["fails"] == 4
        assert any("flowtrace.dropped_calls" in span["attributes"] for span in received)
