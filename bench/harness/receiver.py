"""A live OTLP/HTTP receiver in its own process, so its decoding CPU is not the traced program's.

It is :class:`flowtrace_otel.testing.OtlpReceiver` (a real HTTP server that parses every
``ExportTraceServiceRequest`` with protobuf, and a real gRPC ``TraceService``) keeping only a
span count. Protocol: it prints its OTLP/HTTP endpoint and its gRPC endpoint, one a line, then
answers each ``count`` line on stdin with the number of spans received so far (both kinds).
"""

from __future__ import annotations

import sys

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from flowtrace_otel.testing import OtlpReceiver


class CountingReceiver(OtlpReceiver):
    """Counts spans instead of keeping them as dicts."""

    count = 0

    def _add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        """Count the spans of one export request."""
        spans = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
        with self._cond:
            self.requests += 1
            self.count += spans
            self._cond.notify_all()


def main() -> None:
    """Serve until stdin closes."""
    with CountingReceiver(grpc=True) as receiver:
        print(receiver.http_endpoint, receiver.grpc_endpoint, sep="\n", flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                print(receiver.count, flush=True)


if __name__ == "__main__":
    main()
