"""Run under ``opentelemetry-instrument`` with FLOWTRACE_OTEL=1: which pipelines take the fast path.

The program adds a processor of its own to the global provider (its spans must stay real
``ReadableSpan`` objects), makes one span of its own with the SDK, calls traced functions, and
prints what it saw as JSON.
"""

from __future__ import annotations

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor


class Recorder(SpanProcessor):
    """The application's own processor: remembers the class of every span it is given."""

    def __init__(self) -> None:
        self.classes: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.classes.append(f"{type(span).__module__}.{type(span).__qualname__}")


def leaf(n: int) -> int:
    return n * 2


def work(n: int) -> int:
    return sum(leaf(i) for i in range(n))


def main() -> None:
    provider = trace.get_tracer_provider()
    recorder = Recorder()
    provider.add_span_processor(recorder)  # type: ignore[attr-defined]
    with trace.get_tracer("app").start_as_current_span("app-span"):
        work(3)
    from flowtrace_otel.otel import app_fast_path

    processors = provider._active_span_processor._span_processors  # type: ignore[attr-defined]
    exporters = [app_fast_path.stock_exporter(p) for p in processors]
    print(json.dumps({"adopted": [app_fast_path.adopted(e) for e in exporters if e is not None],
                      "recorded": sorted(set(recorder.classes)),
                      "count": len(recorder.classes)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
