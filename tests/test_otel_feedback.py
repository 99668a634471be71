"""A user-defined exporter run by the SDK (export instrumentation suppressed) is not traced."""
import threading

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from flowtrace_otel import otel


class RecordingExporter(SpanExporter):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.exported = threading.Event()

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.names += [s.name for s in spans]
        self.exported.set()
        return SpanExportResult.SUCCESS


def work() -> int:
    return 1


def test_the_exporter_thread_does_not_trace_a_user_exporter() -> None:
    exporter = RecordingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=10))
    otel.instrument(tracer_provider=provider)
    try:
        work()
        assert exporter.exported.wait(10)  # the worker thread ran export() while tracing
    finally:
        otel.uninstrument(timeout_ms=2000)
        provider.shutdown()  # exports whatever is left, untraced
    assert "work" in exporter.names
    assert "RecordingExporter.export" not in exporter.names


SEEDED = """
import random
random.seed(7)
def draw():
    return [random.random() for _ in range(3)]
def main():
    print(draw(), draw())
main()
"""


def test_span_ids_do_not_touch_the_programs_global_random(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    script = tmp_path / "seeded.py"
    script.write_text(SEEDED)
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console"}
    plain = subprocess.run([sys.executable, str(script)], env={**env, "FLOWTRACE_OTEL": "0"},
                           capture_output=True, text=True, timeout=60, check=True)
    traced = subprocess.run([sys.executable, str(script)], env={**env, "FLOWTRACE_OTEL": "1"},
                            capture_output=True, text=True, timeout=60, check=True)
    first_line = traced.stdout.splitlines()[0]
    assert first_line == plain.stdout.strip()
    assert '"name": "draw"' in traced.stdout  # it really was traced
