"""The private pipeline's queue: bursts lose whole traces only, counted; no program-visible state.

Real parts: traced programs in subprocesses, a real OTLP/HTTP receiver, a real Hypothesis run.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from pathlib import Path

import pytest
from _programs import PY, mode_env, run, write
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from flowtrace_otel.otel import pipeline
from flowtrace_otel.otel.encoding import FastOTLPSpanExporter
from flowtrace_otel.otel.export_queue import TraceQueue
from flowtrace_otel.testing import OtlpReceiver

BURST = """
    import sys
    def leaf(n):
        return n * 2
    def step(n):
        return leaf(n) + leaf(n + 1)
    def handle(n):
        return sum(step(i) for i in range(11))  # 1 + 11 * 3 = 34 calls, as a request
    for n in range(int(sys.argv[1])):
        handle(n)
    if len(sys.argv) > 2:  # wait until the queue has drained, then one more request
        from flowtrace_otel.otel import instrument, uninstrument
        instrument()  # joins the FLOWTRACE_OTEL=1 bridge: uninstrument() only flushes it
        uninstrument()
        handle(-1)
    print("done")
"""
SPANS_PER_REQUEST = 34


def test_burst_drops_whole_traces_and_counts_them(tmp_path: Path) -> None:
    """600 requests into a queue of 2048 spans: what arrives is whole traces, drops are counted.

    No span arrives without its parent; every trace that arrives has all its 34 spans; the
    roots report how many traces and spans were dropped before them; the exit says the total.
    """
    write(tmp_path, BURST)
    with OtlpReceiver(grpc=False) as receiver:
        # a long exit wait: only the queue may lose spans here (see the next test)
        env = mode_env("env", receiver.env(), FLOWTRACE_OTEL_QUEUE_SPANS="2048",
                       FLOWTRACE_OTEL_EXIT_TIMEOUT_MS="60000")
        done = run([PY, "prog.py", "600", "then-one-more"], env, tmp_path, timeout=180)
        spans = receiver.spans()  # the program flushed before it exited
    assert done.code == 0 and done.stdout == "done\n", done.stderr
    ids = {s["span_id"] for s in spans}
    assert [s for s in spans if s["parent_id"] and s["parent_id"] not in ids] == []
    per_trace: dict[str, int] = {}
    for span in spans:
        per_trace[span["trace_id"]] = per_trace.get(span["trace_id"], 0) + 1
    assert set(per_trace.values()) == {SPANS_PER_REQUEST}
    roots = [s for s in spans if s["name"] == "handle"]
    dropped = 601 - len(roots)
    assert dropped > 0  # the queue was too small for the burst: this tests the loss policy
    reported = sum(r["attributes"].get("flowtrace.dropped_traces", 0) for r in roots)
    reported_spans = sum(r["attributes"].get("flowtrace.dropped_spans", 0) for r in roots)
    line = re.search(r"flowtrace_otel: (\d+) spans not delivered: (\d+) traces dropped whole",
                     done.stderr)
    assert line is not None, done.stderr
    assert int(line.group(2)) == dropped
    assert int(line.group(1)) == dropped * SPANS_PER_REQUEST
    # every drop is reported once, on a later root: the last request, sent after the queue
    # drained, carries those that no root of the burst could (how many depends on how fast
    # the export thread drained the queue during the burst)
    assert reported == dropped and reported_spans == reported * SPANS_PER_REQUEST
    assert any(r["attributes"].get("flowtrace.arg.n") == "-1" for r in roots)


def test_burst_of_600_requests_delivers_every_root(tmp_path: Path) -> None:
    """With the default queue, all 600 requests arrive whole, and nothing is said at exit.

    The queue is what this tests, not the exit deadline: on a loaded machine sending the
    20,400 spans can take longer than the default 3 s exit wait (the exit line then says
    "still queued", tested below), so the wait is long here; the run's timeout detects a hang.
    """
    write(tmp_path, BURST)
    with OtlpReceiver(grpc=False) as receiver:
        env = mode_env("env", receiver.env(), FLOWTRACE_OTEL_EXIT_TIMEOUT_MS="60000")
        done = run([PY, "prog.py", "600"], env, tmp_path, timeout=180)
        spans = receiver.spans()
    assert done.code == 0 and done.stderr == "", done.stderr
    assert len([s for s in spans if s["name"] == "handle"]) == 600
    assert len(spans) == 600 * SPANS_PER_REQUEST


# --- no program-visible state ---------------------------------------------------------------------

HYPOTHESIS_SUITE = """
    from hypothesis import given, settings, strategies as st

    def normalise(words):
        return sorted(w.strip().lower() for w in words)

    def total(numbers):
        return sum(n * 2 for n in numbers)

    @st.composite
    def orders(draw):
        lines = draw(st.lists(st.integers(0, 100), max_size=8))
        return {"lines": lines, "total": total(lines)}

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.lists(st.text(max_size=5), max_size=6))
    def test_normalise(words):
        assert normalise(words) == sorted(normalise(words))

    @settings(max_examples=300, deadline=None, database=None)
    @given(orders())
    def test_orders(order):
        assert order["total"] == 2 * sum(order["lines"])
"""


def test_hypothesis_suite_warns_nothing_traced(tmp_path: Path) -> None:
    """A Hypothesis suite with warnings as errors passes untraced and traced.

    Exports run while strategies run; the stock exporter drew its retry jitter from the
    global ``random`` before every request, which Hypothesis reports as
    ``HypothesisDeprecationWarning: Do not use the random module inside strategies``.
    """
    write(tmp_path, HYPOTHESIS_SUITE, "test_suite.py")
    cmd = [PY, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "test_suite.py"]
    with OtlpReceiver(grpc=False) as receiver:
        plain = run(cmd, mode_env("plain"), tmp_path, timeout=300)
        traced = run(cmd, mode_env("env", {**receiver.env(), "OTEL_BSP_SCHEDULE_DELAY": "5"}),
                     tmp_path, timeout=300)
        assert receiver.wait_for_attempts(2) >= 2  # exports ran while the suite did
    assert plain.code == 0, plain.stdout[-2000:]
    assert traced.code == 0, traced.stdout[-3000:]
    assert "2 passed" in traced.stdout


RANDOM_STATE = """
    import random, sys
    from flowtrace_otel.otel import instrument, uninstrument

    def work(n):
        return [n * i for i in range(3)]

    random.seed(5)
    before = random.getstate()
    bridge = instrument()
    for n in range(200):
        work(n)
    bridge.force_flush(2500)  # the receiver answers 503: the exporter retries with backoff
    uninstrument(timeout_ms=500)
    print(random.getstate() == before)
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_random_state_unchanged_by_traced_work_and_failing_export(
        tmp_path: Path, protocol: str) -> None:
    """``random.getstate()`` is the same after traced calls and an export that was retried.

    Both exporters draw a jittered backoff for each retry: from our own generator.
    """
    write(tmp_path, RANDOM_STATE)
    with OtlpReceiver(grpc=protocol == "grpc", status=503, grpc_status="UNAVAILABLE") as receiver:
        done = run([PY, "prog.py"], mode_env("plain", **receiver.env(protocol)), tmp_path)
        attempts = receiver.attempts
    assert done.stdout == "True\n", done.stderr
    assert attempts >= 2  # a first request and at least one retry


# --- no false promises ----------------------------------------------------------------------------

CLI_PROGRAM = """
    def work(n):
        return n + 1
    def main():
        return [work(n) for n in range(5)]
    main()
"""


def _dead_port() -> int:
    """A local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("failure", ["dead port", "503"])
def test_cli_shows_no_trace_link_when_export_failed(tmp_path: Path, failure: str) -> None:
    """``run --otel`` against a backend that failed: no link, one line saying what was lost."""
    write(tmp_path, CLI_PROGRAM)
    env = mode_env("cli", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   FLOWTRACE_OTEL_EXIT_TIMEOUT_MS="2500")
    cmd = [PY, "-m", "flowtrace_otel", "run", "--otel", "prog.py"]
    if failure == "dead port":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{_dead_port()}"
        done = run(cmd, env, tmp_path)
        attempts = 1  # nothing can count connection attempts to a closed port
    else:
        with OtlpReceiver(grpc=False, status=503) as receiver:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.http_endpoint
            done = run(cmd, env, tmp_path)
            attempts = receiver.attempts
    assert done.code == 0
    assert attempts >= 1  # an export was attempted
    lines = done.stderr.splitlines()
    assert "16686" not in done.stderr and not any("trace " in line for line in lines), lines
    assert len(lines) == 1, lines
    assert re.match(r"flowtrace_otel: 6 spans not delivered: 6 failed to export to "
                    r"http://127\.0\.0\.1:\d+ after \d+ attempts", lines[0]), lines
    reason = "Service Unavailable" if failure == "503" else "Connection refused"
    assert reason in lines[0]


def test_cli_shows_the_link_when_export_worked(tmp_path: Path) -> None:
    """The same run against a working receiver prints the trace link, and nothing else."""
    write(tmp_path, CLI_PROGRAM)
    with OtlpReceiver(grpc=False) as receiver:
        env = mode_env("cli", **receiver.env())
        done = run([PY, "-m", "flowtrace_otel", "run", "--otel", "prog.py"], env, tmp_path)
        spans = receiver.spans()
    assert len(spans) == 6
    assert done.stderr == (f"flowtrace-otel: trace {spans[0]['trace_id']}"
                           f"  http://localhost:16686/trace/{spans[0]['trace_id']}\n")




NOT_SENT = {
    "none": ({"OTEL_TRACES_EXPORTER": "none"}, "not exported: OTEL_TRACES_EXPORTER=none"),
    "console": ({"OTEL_TRACES_EXPORTER": "console"},
                "written by the console exporter, not sent to an OTLP endpoint "
                "(OTEL_TRACES_EXPORTER=console)"),
    "sdk disabled": ({"OTEL_SDK_DISABLED": "true"}, "not exported: OTEL_SDK_DISABLED=true"),
}


@pytest.mark.parametrize("setup", sorted(NOT_SENT))
def test_cli_promises_no_link_for_traces_not_sent(tmp_path: Path, setup: str) -> None:
    """Exporter ``none``/``console`` or the SDK disabled: no link; one line says what happened."""
    write(tmp_path, CLI_PROGRAM)
    extra, said = NOT_SENT[setup]
    with OtlpReceiver(grpc=False) as receiver:  # a local endpoint: a link would be offered
        env = mode_env("cli", **receiver.env(), **extra)
        done = run([PY, "-m", "flowtrace_otel", "run", "--otel", "prog.py"], env, tmp_path)
    assert done.code == 0, done.stderr
    assert receiver.attempts == 0  # nothing was sent
    assert "16686" not in done.stderr
    assert re.fullmatch(rf"flowtrace-otel: 1 trace \([0-9a-f]{{32}}\) {re.escape(said)}\n",
                        done.stderr), done.stderr


OWN_PROVIDER = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)
    def work(n):
        return n + 1
    work(1)
"""


def test_cli_promises_no_link_for_traces_of_the_programs_own_provider(tmp_path: Path) -> None:
    """Spans that went to the program's own TracerProvider: its exporters decide, no link."""
    write(tmp_path, OWN_PROVIDER)
    with OtlpReceiver(grpc=False) as receiver:
        env = mode_env("cli", **receiver.env())
        done = run([PY, "-m", "flowtrace_otel", "run", "--otel", "prog.py"], env, tmp_path)
    assert done.code == 0, done.stderr
    assert receiver.attempts == 0
    assert re.fullmatch(r"flowtrace-otel: 1 trace \([0-9a-f]{32}\) handed to the program's own "
                        r"TracerProvider \(its exporters decide where they go\)\n",
                        done.stderr), done.stderr


EXPORT_ERROR_THREADS = """
    import threading
    from flowtrace_otel.otel import instrument, uninstrument
    def work():
        return 1
    bridge = instrument()
    work()
    bridge.force_flush(1500)  # the worker logs the export error (logging names the thread)
    print(threading.active_count(), [t.name for t in threading.enumerate()])
    uninstrument(timeout_ms=200)
"""


def test_export_errors_leave_no_thread_in_threading(tmp_path: Path) -> None:
    """An export error logged by the worker does not make ``threading`` list the worker.

    ``logging`` asks ``threading.current_thread()`` for the thread's name, which registers a
    dummy thread for a thread ``threading`` did not start.
    """
    write(tmp_path, EXPORT_ERROR_THREADS)
    env = mode_env("plain", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_dead_port()}",
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    done = run([PY, "prog.py"], env, tmp_path)
    assert done.stdout == "1 ['MainThread']\n", done.stderr
    assert "Connection refused" in done.stderr  # the export failed, and the worker logged it


# --- the queue itself, in-process ----------------------------------------------------------------

class _Recorder:
    """An exporter that keeps each batch it was given."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def export(self, spans: object) -> object:
        self.batches.append([s.name for s in spans])  # type: ignore[attr-defined]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to close."""


def _span(name: str, trace_id: int, span_id: int, parent_id: int | None) -> object:
    """A finished, sampled ReadableSpan."""
    flags = TraceFlags(TraceFlags.SAMPLED)
    parent = None if parent_id is None else SpanContext(trace_id, parent_id, False, flags)
    return ReadableSpan(name=name, context=SpanContext(trace_id, span_id, False, flags),
                        parent=parent)


def _trace(queue: object, trace_id: int, children: int, root: bool = True) -> None:
    """``children`` leaf spans, then (if ``root``) their root, in end order."""
    for n in range(children):
        queue.on_end(_span(f"t{trace_id}.c{n}", trace_id, 100 + n, 1))  # type: ignore[attr-defined]
    if root:
        queue.on_end(_span(f"t{trace_id}.root", trace_id, 1, None))  # type: ignore[attr-defined]


def test_queue_sends_whole_traces_and_drops_new_ones_when_full() -> None:
    """A trace leaves whole after its root; past the limit a new trace is dropped whole."""
    recorder = _Recorder()
    queue = TraceQueue(recorder, limit=3, batch=100, delay_ms=60_000)  # type: ignore[arg-type]
    _trace(queue, 1, 3, root=False)
    assert queue.held == 3 and recorder.batches == []  # waiting for its root
    _trace(queue, 2, 1)  # held 3 before trace 2's first span: refused, and its root too
    _trace(queue, 1, 0)  # trace 1's root: it is complete (the limit does not apply to it)
    assert queue.report_drops(3) == {"flowtrace.dropped_traces": 1, "flowtrace.dropped_spans": 2}
    assert queue.report_drops(3) == {}  # reported once
    assert queue.force_flush(10_000)
    assert recorder.batches == [["t1.c0", "t1.c1", "t1.c2", "t1.root"]]
    queue.shutdown(1000)
    assert queue.undelivered() == 2 and queue.lost_trace_ids() == {2}


def test_queue_hard_bound_drops_the_trace_that_crosses_it() -> None:
    """An admitted trace may grow the queue to twice the limit; the span beyond drops it whole."""
    recorder = _Recorder()
    queue = TraceQueue(recorder, limit=2, batch=100, delay_ms=60_000)  # type: ignore[arg-type]
    _trace(queue, 1, 5)  # 4 held, the 5th span crosses the hard bound (4): all of it goes
    assert queue.held == 0
    assert queue.drops.total_traces == 1 and queue.drops.total_spans == 6
    _trace(queue, 2, 1)  # the queue is free again
    assert queue.force_flush(10_000)
    assert recorder.batches == [["t2.c0", "t2.root"]]
    queue.shutdown(1000)


# --- what the exit line says ---------------------------------------------------------------------

def _provider_with(queue: TraceQueue) -> TracerProvider:
    """A provider whose only processor is ``queue`` (as the private pipeline builds it)."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(queue)
    return provider


def test_exit_line_gives_the_exporters_reason_when_logging_is_silenced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused export is reported with the receiver's status, even with logging turned off.

    Test suites silence logging (``logging.disable``); the stock exporter only logs why.
    """
    monkeypatch.setattr(pipeline._quiet, "first", "")  # nothing remembered from other tests
    with OtlpReceiver(grpc=False, status=503) as receiver:
        # a timeout below the first backoff: one request, then the exporter gives up
        exporter = FastOTLPSpanExporter(endpoint=f"{receiver.http_endpoint}/v1/traces",
                                        timeout=0.5)
        queue = TraceQueue(exporter, batch=100, delay_ms=60_000)
        provider = _provider_with(queue)
        logging.disable(logging.CRITICAL)
        try:
            _trace(queue, 7, 2)
            queue.shutdown(5000)
        finally:
            logging.disable(logging.NOTSET)
        refused = receiver.refused
    assert refused >= 1  # the export was attempted and refused
    assert pipeline.undelivered_line(provider, 5000) == (
        f"flowtrace_otel: 3 spans not delivered: 3 failed to export to "
        f"{pipeline._endpoint()} after 1 attempts: HTTP 503 Service Unavailable")
    assert queue.lost_trace_ids() == {7}


class _Stuck:
    """An exporter whose export waits until released (a backend that never answers)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, spans: object) -> object:
        self.entered.set()
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Shutting down does not interrupt the export (as a stuck connection)."""


def test_exit_line_says_what_was_still_being_sent_when_the_exit_wait_ended() -> None:
    """Spans in flight or queued at the exit deadline: counted as such, and their traces lost."""
    stuck = _Stuck()
    queue = TraceQueue(stuck, batch=3, delay_ms=60_000)  # type: ignore[arg-type]
    provider = _provider_with(queue)
    try:
        _trace(queue, 1, 2)  # a full batch: the worker takes it and gets stuck exporting it
        assert stuck.entered.wait(30)
        _trace(queue, 2, 1)  # queued behind it
        queue.shutdown(100)
        assert pipeline.undelivered_line(provider, 100) == (
            "flowtrace_otel: 5 spans not delivered: 5 still queued or being sent when the exit "
            f"wait (100 ms, FLOWTRACE_OTEL_EXIT_TIMEOUT_MS) ended (0 sent to "
            f"{pipeline._endpoint()} by then)")
        assert queue.lost_trace_ids() == {1, 2}  # the one in flight too: no link for it
    finally:
        stuck.release.set()
