"""The peer: hand-written OpenTelemetry spans on the same functions, the stock way.

A decorator opens ``tracer.start_as_current_span`` around every function of the workload
module, with the three static code attributes a careful author would add. Spans go through
the stock SDK ``TracerProvider`` + ``BatchSpanProcessor`` + ``OTLPSpanExporter`` (HTTP).
"""

from __future__ import annotations

import functools
import inspect
import types
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

#: Same queue as the bridge's own provider, so that neither side drops spans (the SDK's
#: default 2048 drops ~40% of the request workload's spans, which would flatter the peer).
QUEUE_SIZE = 16384


def provider(endpoint: str | None) -> TracerProvider:
    """The stock pipeline pointed at the receiver (no processor when ``endpoint`` is None)."""
    tp = TracerProvider(resource=Resource.create({"service.name": "bench-peer"}),
                        shutdown_on_exit=False)
    if endpoint is not None:
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        tp.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=QUEUE_SIZE))
    return tp


def _wrap(fn: Any, tracer: Any) -> Any:
    """``fn`` inside a span named after it."""
    name = fn.__qualname__
    code = fn.__code__
    attributes = {"code.function.name": f"{fn.__module__}.{name}",
                  "code.file.path": code.co_filename, "code.line.number": code.co_firstlineno}
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(name, attributes=attributes):
                return await fn(*args, **kwargs)
        return traced_async

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        with tracer.start_as_current_span(name, attributes=attributes):
            return fn(*args, **kwargs)
    return traced


def decorate_module(module: types.ModuleType, tracer: Any) -> int:
    """Wrap every function defined in ``module`` (calls go through the module globals)."""
    count = 0
    for attr, value in list(vars(module).items()):
        if inspect.isfunction(value) and value.__module__ == module.__name__:
            setattr(module, attr, _wrap(value, tracer))
            count += 1
    return count
