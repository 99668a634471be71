"""The application's own provider, set up the way ``opentelemetry-instrument`` sets it up.

Under the real ``opentelemetry-instrument`` launcher (``bench/run.py`` uses it when the venv
has it) the distro's configurator has already registered a global SDK ``TracerProvider`` with
the stock ``BatchSpanProcessor`` and the stock OTLP exporter named by ``OTEL_*`` (gRPC by
default) before the worker runs: :func:`provider` returns it. Without the launcher it builds
the same pipeline from the same variables and registers it globally, as the configurator does.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def provider() -> tuple[TracerProvider, str]:
    """The global SDK provider and who set it up (``opentelemetry-instrument`` or ``harness``)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current, "opentelemetry-instrument"
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # as opentelemetry.sdk._configuration._init_tracing: resource from OTEL_SERVICE_NAME and
    # OTEL_RESOURCE_ATTRIBUTES, BatchSpanProcessor sized by OTEL_BSP_*, exporter by OTEL_EXPORTER_*
    built = TracerProvider(resource=Resource.create())
    built.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(built)
    return built, "harness"
