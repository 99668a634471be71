"""A span per pytest test while the bridge runs (``FLOWTRACE_OTEL=1``), the test's calls under it.

The pytest plugin (:mod:`flowtrace_otel.pytest_plugin`) starts one around each test's setup,
call and teardown and makes it the current span: the bridge parents the first traced call of
each phase under the current span, so every call the test makes lands in the test's trace.
The span goes through the bridge's provider (the application's, or the private one built from
``OTEL_*``), so it is exported, sampled and flushed with the calls.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from flowtrace_otel import __version__, otel
from flowtrace_otel.otel.bridge import _traceparent_context

#: the span's outcome attribute: passed, failed, error, skipped, xfailed, xpassed
ATTR_OUTCOME = "test.outcome"
#: OpenTelemetry's semantic convention for a test case's result: pass or fail
ATTR_RESULT = "test.case.result.status"


class CaseSpan:
    """One test's span, current from :func:`start` until :meth:`end`."""

    def __init__(self, span: trace.Span, token: object) -> None:
        """Remember the span and the context token to detach."""
        self.span = span
        self.token = token
        self.outcome = "passed"
        self.message = ""

    def add_report(self, report: Any) -> None:
        """Take in one phase's report (setup, call, teardown): the test's outcome so far."""
        wasxfail = hasattr(report, "wasxfail")
        if report.when == "call":
            if report.failed:
                self.outcome = "failed"
            elif report.skipped:
                self.outcome = "xfailed" if wasxfail else "skipped"
            elif wasxfail:
                self.outcome = "xpassed"
        elif report.failed and self.outcome not in ("failed", "error"):
            self.outcome = "error"  # a fixture failed (setup or teardown)
        elif report.skipped and report.when == "setup":
            self.outcome = "xfailed" if wasxfail else "skipped"
        if report.failed and not self.message:
            self.message = _crash_message(report)

    def end(self) -> None:
        """Detach the span's context, set the outcome and end it."""
        try:
            otel_context.detach(self.token)  # type: ignore[arg-type]
        finally:
            self.span.set_attribute(ATTR_OUTCOME, self.outcome)
            if self.outcome in ("failed", "error"):
                self.span.set_attribute(ATTR_RESULT, "fail")
                self.span.set_status(Status(StatusCode.ERROR, self.message or self.outcome))
            elif self.outcome in ("passed", "xfailed", "xpassed"):
                self.span.set_attribute(ATTR_RESULT, "pass")
            self.span.end()


def _crash_message(report: Any) -> str:
    """The failure's one-line message (``AssertionError: assert 6 == 7``), if pytest has it."""
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    message = getattr(crash, "message", None)
    if isinstance(message, str):
        return message.splitlines()[0] if message else ""
    text = str(getattr(report, "longreprtext", "") or "")
    return text.strip().splitlines()[-1] if text.strip() else ""


def start(name: str, attributes: dict[str, Any]) -> CaseSpan | None:
    """Start the test's span and make it current; None if the bridge cannot be built."""
    consumer = otel._active
    if consumer is None:
        return None
    try:
        bridge = otel._built(consumer)
    except RuntimeError:  # the bridge failed to build: it said so once already
        return None
    tracer = bridge.provider().get_tracer("flowtrace_otel.pytest", __version__)
    parent = _traceparent_context()  # TRACEPARENT from a parent process (a CI job's span)
    span = tracer.start_span(name, context=parent, kind=SpanKind.INTERNAL, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return CaseSpan(span, token)


def flush() -> None:
    """Export the spans queued so far (bounded by ``FLOWTRACE_OTEL_EXIT_TIMEOUT_MS``)."""
    consumer = otel._active
    bridge = getattr(consumer, "bridge", consumer) if consumer is not None else None
    if bridge is not None and hasattr(bridge, "force_flush"):
        from flowtrace_otel.otel import pipeline  # noqa: PLC0415

        bridge.force_flush(pipeline.exit_timeout_ms())
