"""Test helpers: a real OTLP trace receiver on local sockets (HTTP/protobuf and gRPC).

It decodes what the real exporters send with ``opentelemetry-proto`` and keeps the spans as
plain dicts, so tests (and the benchmark) check what a backend would receive::

    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        ...  # run a program with FLOWTRACE_OTEL=1 and env
        spans = receiver.wait_for_spans(3)

``python -m flowtrace_otel.testing`` runs one in the foreground and prints its endpoints.
"""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

Spans = list[dict[str, Any]]


def _value(value: AnyValue) -> Any:
    """A Python value from an OTLP ``AnyValue``."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def span_dict(span: Span, resource: dict[str, Any], scope: str) -> dict[str, Any]:
    """A decoded span as a dict with hex ids, attributes, events and status."""
    return {
        "name": span.name,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_id": span.parent_span_id.hex() or None,
        "kind": Span.SpanKind.Name(span.kind),
        "start": span.start_time_unix_nano,
        "end": span.end_time_unix_nano,
        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
        "events": [
            {"name": e.name, "time": e.time_unix_nano,
             "attributes": {kv.key: _value(kv.value) for kv in e.attributes}}
            for e in span.events
        ],
        "status": Status.StatusCode.Name(span.status.code),
        "status_message": span.status.message,
        "resource": resource,
        "scope": scope,
    }


class OtlpReceiver:
    """Receives OTLP traces over HTTP (``/v1/traces``) and gRPC on free local ports."""

    def __init__(self, grpc: bool = True, status: int = 200,
                 grpc_status: str | None = None, keep_raw: bool = False) -> None:
        """``status`` makes the HTTP side answer errors (e.g. 503); ``grpc_status`` (a
        ``grpc.StatusCode`` name such as ``"UNAVAILABLE"``) makes the gRPC side refuse;
        ``keep_raw`` keeps each request's bytes in ``raw_requests``."""
        self._spans: Spans = []
        self._cond = threading.Condition()
        self.requests = 0  # export requests accepted (status 200)
        #: the serialized ``ExportTraceServiceRequest`` of each accepted request, as received
        #: (after gzip or gRPC decompression), with ``keep_raw``: what tests compare byte for byte
        self.keep_raw = keep_raw
        self.raw_requests: list[bytes] = []
        self.attempts = 0  # every POST (or gRPC Export) received, whatever the answer
        #: export requests answered with ``status`` (not 200) and not stored
        self.refused = 0
        self.status = status
        self.grpc_status = grpc_status
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True,
                                             name="otlp-receiver-http")
        self._grpc_server: Any = None
        self.grpc_port = 0
        if grpc:
            self._start_grpc()

    # --- endpoints ---------------------------------------------------------------------------
    @property
    def http_endpoint(self) -> str:
        """Base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` with ``http/protobuf``."""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def grpc_endpoint(self) -> str:
        """Address for ``OTEL_EXPORTER_OTLP_ENDPOINT`` with ``grpc``."""
        return f"http://127.0.0.1:{self.grpc_port}"

    def env(self, protocol: str = "http/protobuf") -> dict[str, str]:
        """Environment variables that point an exporter at this receiver."""
        endpoint = self.grpc_endpoint if protocol == "grpc" else self.http_endpoint
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                "OTEL_EXPORTER_OTLP_INSECURE": "true"}

    # --- results -----------------------------------------------------------------------------
    def spans(self) -> Spans:
        """Every span received so far."""
        with self._cond:
            return list(self._spans)

    def wait_for_spans(self, count: int, timeout: float = 20.0) -> Spans:
        """Wait until at least ``count`` spans arrived (or the timeout passed); return all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._spans) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self._spans)

    def wait_for_attempts(self, count: int, timeout: float = 20.0) -> int:
        """Wait until ``count`` POSTs arrived, whatever the answer; return how many did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.attempts < count and deadline > time.monotonic():
                self._cond.wait(deadline - time.monotonic())
            return self.attempts

    def clear(self) -> None:
        """Forget what was received."""
        with self._cond:
            self._spans.clear()
            self.raw_requests.clear()

    def _keep_raw(self, raw: bytes) -> None:
        """Keep the bytes of one accepted export request (before its spans are stored)."""
        if not self.keep_raw:
            return
        with self._cond:
            self.raw_requests.append(raw)

    def _add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        """Store the spans of one export request."""
        decoded: Spans = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    decoded.append(span_dict(span, resource, scope_spans.scope.name))
        with self._cond:
            self.requests += 1
            self._spans.extend(decoded)
            self._cond.notify_all()

    # --- servers -----------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector: one connection per client

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._cond:
                    receiver.attempts += 1
                    receiver._cond.notify_all()
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if receiver.status != 200:
                    with receiver._cond:
                        receiver.refused += 1
                        receiver._cond.notify_all()
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._keep_raw(body)
                receiver._add(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _start_grpc(self) -> None:
        import grpc  # noqa: PLC0415 - comes with the OTLP gRPC exporter
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc  # noqa: PLC0415

        receiver = self

        def parse(raw: bytes) -> tuple[Any, bytes]:
            """The request, and its bytes as received."""
            return trace_service_pb2.ExportTraceServiceRequest.FromString(raw), raw

        class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, received: Any, context: Any) -> Any:
                request, raw = received
                with receiver._cond:
                    receiver.attempts += 1
                    if receiver.grpc_status is not None:
                        receiver.refused += 1
                    receiver._cond.notify_all()
                if receiver.grpc_status is not None:
                    context.abort(grpc.StatusCode[receiver.grpc_status], "refused by the test")
                receiver._keep_raw(raw)
                receiver._add(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        # the stock servicer registration, with a deserializer that also keeps the raw bytes
        handler = grpc.unary_unary_rpc_method_handler(
            Service().Export, request_deserializer=parse,
            response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}),))
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        self._grpc_server = server

    def start(self) -> OtlpReceiver:
        """Start serving; returns ``self``."""
        self._http_thread.start()
        if self._grpc_server is not None:
            self._grpc_server.start()
        return self

    def stop(self) -> None:
        """Stop both servers."""
        self._http.shutdown()
        self._http.server_close()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)

    def __enter__(self) -> OtlpReceiver:
        """Start on entering the block."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop on leaving the block."""
        self.stop()


def tree(spans: Spans) -> dict[str | None, list[dict[str, Any]]]:
    """Spans grouped by parent span id (None for roots), each group in start order."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["start"]):
        groups.setdefault(span["parent_id"], []).append(span)
    return groups


if __name__ == "__main__":  # pragma: no cover - manual use
    with OtlpReceiver() as running:
        print(f"OTLP http/protobuf: {running.http_endpoint}  grpc: {running.grpc_endpoint}",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
