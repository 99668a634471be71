"""OTLP span encoding: the stock encoder against ``flowtrace_otel.otel.encoding``, and end to end.

Usage (from the repository root)::

    .venv-3.12/bin/python bench/encode_bench.py             # encoder, then end to end
    .venv-3.12/bin/python bench/encode_bench.py --encoder   # encoder only (~20 s)
    .venv-3.12/bin/python bench/encode_bench.py --e2e       # end to end only
    .venv-3.12/bin/python bench/encode_bench.py --app       # the application's provider only

Encoder: batches of 512 spans shaped like the bridge's (8-12 string/int attributes:
``code.*``, ``flowtrace.arg.*``, ``flowtrace.return``, ``thread.*``; one in eight with an
``exception`` event and status ERROR; one Resource and one InstrumentationScope), encoded by
``encode_spans(spans).SerializeToString()`` and by ``encode_spans_fast(spans)`` in interleaved
repeats; per-span times are medians. Both outputs are checked to be the same bytes.

End to end: the request workload (JSON in, ~60 user calls, JSON out) in a fresh process per
run, traced by ``flowtrace_otel.otel.instrument(tracer_provider=...)`` with a TracerProvider +
BatchSpanProcessor + the stock ``OTLPSpanExporter`` or ``FastOTLPSpanExporter``, exporting to
an OTLP receiver in another process; plus ``plain`` (untraced) and ``peer`` (hand-written spans,
stock SDK and exporter, see ``harness/peer.py``). CPU is ``time.process_time()`` of the traced
process (all its threads, the exporter's included), up to the final flush. CPU per exported span
= (CPU of the run - median CPU of the plain runs) / spans the receiver got from that run.

Application's provider (``--app``, not in the default run): the same workload and CPU figure,
but the bridge finds the provider the application set globally (as under
``opentelemetry-instrument``): a TracerProvider + the SDK's ``BatchSpanProcessor`` + the stock
OTLP exporter, gRPC or HTTP/protobuf; ``stock`` with ``FLOWTRACE_OTEL_FAST_EXPORT=0``, ``fast``
with the default (our spans encoded by hand inside that stock exporter, see
``flowtrace_otel/otel/app_fast_path.py``). The receiver runs in another process, both protocols.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

BATCH = 512
E2E_MODES = ("plain", "stock", "fast", "peer")
E2E_UNITS = {"plain": 3000, "stock": 300, "fast": 300, "peer": 200}
APP_MODES = ("plain", "app-stock-grpc", "app-fast-grpc", "app-stock-http", "app-fast-http",
             "private-stock-grpc", "private-fast-grpc")


# --- spans like the bridge's ------------------------------------------------------------------
def make_spans(count: int = BATCH, seed: int = 1) -> list[Any]:
    """``count`` finished spans shaped like the bridge's, sharing one resource and scope."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
    from opentelemetry.trace.status import Status, StatusCode

    rng = random.Random(seed)
    resource = Resource.create({"service.name": "bench-encode"})
    scope = InstrumentationScope("flowtrace_otel", "0.1.0")
    sampled = TraceFlags(TraceFlags.SAMPLED)
    functions = [(f"app.orders.{cls}.{meth}", f"{cls}.{meth}", f"/srv/app/{cls.lower()}.py",
                  rng.randrange(10, 900), params)
                 for cls, meth, params in [
                     ("OrderService", "handle", ("self", "request")),
                     ("Pricing", "line_total", ("self", "sku", "qty", "rates")),
                     ("Inventory", "reserve", ("self", "sku", "qty")),
                     ("Validator", "check_email", ("email",)),
                     ("Tax", "rate_for", ("category", "country", "date", "exempt")),
                     ("Render", "to_json", ("self", "payload", "indent", "sort_keys", "ensure"))]]
    spans = []
    start = 1_763_790_000_000_000_000
    trace_id = rng.getrandbits(128)
    root_id = rng.getrandbits(64)
    for n in range(count):
        if n % 64 == 0:
            trace_id, root_id = rng.getrandbits(128), rng.getrandbits(64)
        full, qual, path, line, params = functions[n % len(functions)]
        attrs: dict[str, Any] = {"code.function.name": full, "code.file.path": path,
                                 "code.line.number": line}
        for param in params:
            attrs["flowtrace.arg." + param] = (
                f"<{qual.split('.')[0]} object>" if param == "self"
                else repr(rng.choice([f"SKU-{rng.randrange(200):04d}", rng.randrange(1, 5),
                                      {"name": f"customer {n}", "qty": 2}, 0.07])))
        failed = n % 8 == 7
        if not failed:
            attrs["flowtrace.return"] = repr(rng.choice([True, 12.5, f"ok-{n}", None]))
        attrs["thread.id"] = 140_234_567_890_123
        attrs["thread.name"] = "MainThread"
        begin = start + n * 10_000
        end = begin + rng.randrange(1_000, 9_000)
        events = []
        status = Status(StatusCode.UNSET)
        if failed:
            message = f"no stock for SKU-{n:04d}"
            events.append(Event("exception", {
                "exception.type": "KeyError", "exception.message": message,
                "exception.stacktrace": ("Traceback (most recent call last):\n"
                                         f'  File "{path}", line {line}, in {qual}\n'
                                         f"KeyError: {message}"),
                "exception.escaped": True}, timestamp=end))
            status = Status(StatusCode.ERROR, f"KeyError: {message}")
        parent = None if n % 64 == 0 else SpanContext(trace_id, root_id, False, sampled)
        spans.append(ReadableSpan(
            name=qual, context=SpanContext(trace_id, rng.getrandbits(64), False, sampled),
            parent=parent, resource=resource, attributes=attrs, events=events,
            kind=SpanKind.INTERNAL, status=status, start_time=begin, end_time=end,
            instrumentation_scope=scope))
    return spans


def bridge_spans(count: int = BATCH) -> list[Any]:
    """``count`` spans the bridge made tracing the request workload (kept in memory)."""
    import collections

    from harness import EXCLUDE
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from workloads import request

    from flowtrace_otel import otel

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    otel.instrument(tracer_provider=provider, exclude=(*EXCLUDE, "*/bench/encode_bench.py"))
    try:
        payloads = request.make_payloads(64)
        while len(memory.get_finished_spans()) < count:
            collections.deque(map(request.handle, payloads[:8]), 0)
    finally:
        otel.uninstrument()
    return list(memory.get_finished_spans()[:count])


# --- the encoder ------------------------------------------------------------------------------
def bench_encoder(repeats: int, spans: list[Any]) -> dict[str, Any]:
    """Per-span encoding time, stock and fast, medians of interleaved repeats."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from flowtrace_otel.otel.encoding import encode_spans_fast

    stock_bytes = encode_spans(spans).SerializeToString()
    fast_bytes = encode_spans_fast(spans)
    if stock_bytes != fast_bytes:
        raise SystemExit("encode_bench: the fast encoder's bytes differ from the stock encoder's")

    def stock() -> object:
        return encode_spans(spans).SerializeToString()

    def fast() -> object:
        return encode_spans_fast(spans)

    times: dict[str, list[float]] = {"stock": [], "fast": []}
    ratios = []
    for _ in range(repeats):
        row = {}
        for name, fn in (("stock", stock), ("fast", fast)):
            t0 = time.perf_counter()
            fn()
            fn()
            row[name] = (time.perf_counter() - t0) / (2 * len(spans))
            times[name].append(row[name])
        ratios.append(row["stock"] / row["fast"])
    return {"python": sys.version.split()[0], "spans": len(spans),
            "bytes_per_span": len(stock_bytes) / len(spans),
            "stock_us": statistics.median(times["stock"]) * 1e6,
            "fast_us": statistics.median(times["fast"]) * 1e6,
            "speedup": statistics.median(ratios)}


# --- end to end -------------------------------------------------------------------------------
def _nothing() -> None:
    """No flush, no stop (the plain mode)."""


class _Serialized:
    """Bytes already serialized, for the stock exporter's ``.SerializePartialToString()``."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializePartialToString(self) -> bytes:
        """The bytes."""
        return self.data


def worker(mode: str, units: int, endpoint: str) -> dict[str, Any]:
    """One run of the request workload under ``mode`` in this (fresh) process."""
    import collections
    import gc
    import itertools

    from harness import EXCLUDE
    from workloads import request

    payloads = request.make_payloads(64)
    args = list(itertools.islice(itertools.cycle(payloads), units))
    flush: Any = _nothing
    stop: Any = _nothing
    url = endpoint.rstrip("/") + "/v1/traces"
    exporter: Any = None
    if mode in ("stock", "fast"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from flowtrace_otel import otel
        from flowtrace_otel.otel.encoding import FastOTLPSpanExporter

        cls = FastOTLPSpanExporter if mode == "fast" else OTLPSpanExporter
        provider = TracerProvider(resource=Resource.create({"service.name": "bench-encode"}),
                                  shutdown_on_exit=False)
        exporter = cls(endpoint=url)
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=16384))
        # this file is harness too: the export timer below runs on the exporter's thread
        otel.instrument(tracer_provider=provider, exclude=(*EXCLUDE, "*/bench/encode_bench.py"))
        flush = provider.force_flush
        stop = otel.uninstrument
    elif mode.startswith(("app-", "private-")):
        flush, stop = _app_provider(mode, endpoint)
    elif mode == "peer":
        from harness import peer

        tp = peer.provider(endpoint)
        peer.decorate_module(request, tp.get_tracer("bench-peer"))
        flush, stop = tp.force_flush, tp.shutdown
        exporter = tp._active_span_processor._span_processors[0]._batch_processor._exporter
    export_cpu = [0.0]
    encode_cpu = [0.0]
    if exporter is not None:
        from opentelemetry.exporter.otlp.proto.http import trace_exporter

        from flowtrace_otel.otel import encoding

        module, name = ((encoding, "encode_spans_fast") if mode == "fast"
                        else (trace_exporter, "encode_spans"))
        encode = getattr(module, name)

        def timed_encode(spans: Any) -> Any:
            """The encoder (the stock one returns a message: serialized in export())."""
            t0 = time.thread_time()
            try:
                result = encode(spans)
                return result if mode == "fast" else _Serialized(result.SerializePartialToString())
            finally:
                encode_cpu[0] += time.thread_time() - t0

        setattr(module, name, timed_encode)
        export = exporter.export

        def timed_export(spans: Any) -> Any:
            """The exporter's export, its CPU time (encoding + HTTP) added up."""
            t0 = time.thread_time()
            try:
                return export(spans)
            finally:
                export_cpu[0] += time.thread_time() - t0

        exporter.export = timed_export
    root = request.handle
    collections.deque(map(root, payloads[:5]), 0)  # warm-up
    flush()
    gc.collect()
    export_cpu[0] = encode_cpu[0] = 0.0
    cpu0 = time.process_time()
    collections.deque(map(root, args), 0)
    flush()
    cpu = time.process_time() - cpu0
    stop()
    return {"mode": mode, "units": units, "cpu": cpu, "export_cpu": export_cpu[0],
            "encode_cpu": encode_cpu[0]}


def _app_provider(mode: str, endpoints: str) -> tuple[Any, Any]:
    """The application's global provider with a stock BSP + OTLP exporter; the bridge on."""
    from harness import EXCLUDE
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from flowtrace_otel import otel

    where, variant, protocol = mode.split("-")
    if variant == "stock":
        os.environ["FLOWTRACE_OTEL_FAST_EXPORT"] = "0"
    http_endpoint, grpc_endpoint = endpoints.split(",")
    exclude = (*EXCLUDE, "*/bench/encode_bench.py")
    if where == "private":  # no provider set: the bridge builds its own from OTEL_*
        os.environ.update({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "bench",
                           "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_endpoint})
        bridge = otel.instrument(exclude=exclude)
        return (lambda: otel.flush(bridge, 60_000)), otel.uninstrument
    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )
        exporter = GrpcExporter(endpoint=grpc_endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=http_endpoint.rstrip("/") + "/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-app"}),
                              shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=16384))
    trace.set_tracer_provider(provider)
    otel.instrument(exclude=exclude)
    return provider.force_flush, otel.uninstrument


class _BothReceiver:
    """A counting OTLP receiver process with its HTTP and gRPC sides (``--serve``)."""

    def __init__(self, env: dict[str, str]) -> None:
        """Start it and read its endpoints."""
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"],
                                     cwd=BENCH, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.endpoint = self.proc.stdout.readline().strip()  # "http://...,http://..."
        if not self.endpoint.startswith("http"):
            raise SystemExit("encode_bench: the OTLP receiver did not start")

    def count(self) -> int:
        """Spans received so far."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        """Stop it (closing stdin ends its loop)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def serve() -> None:
    """The ``--serve`` process: count spans over HTTP and gRPC until stdin closes."""
    from harness.receiver import CountingReceiver

    with CountingReceiver(grpc=True) as receiver:
        print(f"{receiver.http_endpoint},{receiver.grpc_endpoint}", flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                print(receiver.count, flush=True)


def _receiver(env: dict[str, str]) -> Any:
    """The benchmark's receiver process, shared with ``bench/run.py``."""
    sys.path.insert(0, str(BENCH))
    from run import Receiver

    return Receiver(env)


def _bench_env() -> dict[str, str]:
    """The workers' environment: no tracer settings, the bench on the path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "FLOWTRACE_OTEL", "PYTHONPATH", "TRACEPARENT"))}
    env["PYTHONPATH"] = str(BENCH)
    env["PYTHONHASHSEED"] = "0"
    return env


def _runs(modes: tuple[str, ...], repeats: int, scale: float,
          receiver: Any) -> dict[str, list[dict[str, Any]]]:
    """Interleaved worker runs of ``modes``, each with the spans the receiver got from it."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    env = _bench_env()
    try:
        for _ in range(repeats):
            for mode in modes:
                units = max(1, int(E2E_UNITS.get(mode, E2E_UNITS["stock"]) * scale))
                before = receiver.count()
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--worker", mode,
                     str(units), receiver.endpoint], cwd=BENCH, env=env, capture_output=True,
                    text=True, timeout=600, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"encode_bench: {mode} failed:\n{proc.stderr}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                deadline = time.monotonic() + 10
                spans = receiver.count() - before
                while mode != "plain" and spans == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)  # the receiver parses after the worker's flush returned
                    spans = receiver.count() - before
                result["spans"] = spans
                runs[mode].append(result)
    finally:
        receiver.close()
    return runs


def bench_e2e(repeats: int, scale: float) -> dict[str, Any]:
    """CPU per exported span of the traced process, per mode, medians of interleaved runs."""
    runs = _runs(E2E_MODES, repeats, scale, _receiver(_bench_env()))
    plain_unit = statistics.median(r["cpu"] / r["units"] for r in runs["plain"])
    out: dict[str, Any] = {"python": sys.version.split()[0], "plain_us_per_request":
                           plain_unit * 1e6}
    for mode in E2E_MODES[1:]:
        per_span = [(r["cpu"] - plain_unit * r["units"]) / r["spans"] for r in runs[mode]
                    if r["spans"]]
        export = [r["export_cpu"] / r["spans"] for r in runs[mode] if r["spans"]]
        encode = [r["encode_cpu"] / r["spans"] for r in runs[mode] if r["spans"]]
        out[mode] = {"spans_per_run": statistics.median(r["spans"] for r in runs[mode]),
                     "cpu_us_per_span": statistics.median(per_span) * 1e6,
                     "export_us_per_span": statistics.median(export) * 1e6,
                     "encode_us_per_span": statistics.median(encode) * 1e6}
    # ratios per repeat (runs measured next to each other), then the median
    pairs = list(zip(runs["stock"], runs["fast"], runs["peer"], strict=True))

    def cost(r: dict[str, Any]) -> float:
        return float((r["cpu"] - plain_unit * r["units"]) / max(r["spans"], 1))

    out["stock_over_fast"] = statistics.median(cost(s) / cost(f) for s, f, _ in pairs)
    out["peer_over_fast"] = statistics.median(cost(p) / cost(f) for _, f, p in pairs)
    return out


def bench_app(repeats: int, scale: float) -> dict[str, Any]:
    """CPU per exported span under the application's provider, stock and fast, per protocol."""
    runs = _runs(APP_MODES, repeats, scale, _BothReceiver(_bench_env()))
    plain_unit = statistics.median(r["cpu"] / r["units"] for r in runs["plain"])

    def cost(r: dict[str, Any]) -> float:
        return float((r["cpu"] - plain_unit * r["units"]) / max(r["spans"], 1))

    out: dict[str, Any] = {"python": sys.version.split()[0],
                           "plain_us_per_request": plain_unit * 1e6}
    for mode in APP_MODES[1:]:
        out[mode] = {"spans_per_run": statistics.median(r["spans"] for r in runs[mode]),
                     "cpu_us_per_span": statistics.median(cost(r) for r in runs[mode]) * 1e6}
    for where, protocol in (("app", "grpc"), ("app", "http"), ("private", "grpc")):
        pairs = zip(runs[f"{where}-stock-{protocol}"], runs[f"{where}-fast-{protocol}"],
                    strict=True)
        out[f"ratio_{where}_{protocol}"] = statistics.median(cost(f) / cost(s) for s, f in pairs)
    return out


def main() -> None:
    """Parse the command line and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", action="store_true", help="the encoder only")
    parser.add_argument("--e2e", action="store_true", help="end to end only")
    parser.add_argument("--app", action="store_true",
                        help="end to end under the application's provider (and the private "
                             "gRPC pipeline) only")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="units per e2e run, x")
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "UNITS", "ENDPOINT"),
                        help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.serve:
        serve()
        return
    if ns.app:
        r = bench_app(ns.repeats or 5, ns.scale)
        print(f"application's provider  Python {r['python']}: request workload, plain "
              f"{r['plain_us_per_request']:.0f} us CPU per request")
        for mode in APP_MODES[1:]:
            print(f"  {mode:16s} {r[mode]['cpu_us_per_span']:7.2f} us CPU per exported span "
                  f"({r[mode]['spans_per_run']:.0f} spans per run)")
        for where, protocol in (("app", "grpc"), ("app", "http"), ("private", "grpc")):
            print(f"  fast / stock ({where}, {protocol}): {r[f'ratio_{where}_{protocol}']:.3f}")
        return
    if ns.worker:
        mode, units, endpoint = ns.worker
        print(json.dumps(worker(mode, int(units), endpoint)), flush=True)
        return
    both = not (ns.encoder or ns.e2e)
    if ns.encoder or both:
        for label, batch in (("synthetic spans (make_spans)", make_spans()),
                             ("bridge spans of the request workload", bridge_spans())):
            r = bench_encoder(ns.repeats or 30, batch)
            print(f"encoder  Python {r['python']}, {label}: {r['spans']} spans per batch, "
                  f"{r['bytes_per_span']:.0f} bytes per span")
            print(f"  stock encode_spans().SerializeToString(): {r['stock_us']:7.2f} us per span")
            print(f"  encode_spans_fast():                      {r['fast_us']:7.2f} us per span")
            print(f"  stock / fast:                             {r['speedup']:7.2f}x")
    if ns.e2e or both:
        r = bench_e2e(ns.repeats or 5, ns.scale)
        print(f"end to end  Python {r['python']}: request workload, plain "
              f"{r['plain_us_per_request']:.0f} us CPU per request")
        for mode, label in (("stock", "bridge + stock OTLPSpanExporter"),
                            ("fast", "bridge + FastOTLPSpanExporter"),
                            ("peer", "hand-written spans, stock SDK + exporter")):
            print(f"  {label:42s} {r[mode]['cpu_us_per_span']:7.2f} us CPU per exported span, "
                  f"{r[mode]['export_us_per_span']:6.2f} in export() of which "
                  f"{r[mode]['encode_us_per_span']:6.2f} encoding "
                  f"({r[mode]['spans_per_run']:.0f} spans per run)")
        print(f"  stock / fast (bridge):                     {r['stock_over_fast']:7.2f}x")
        print(f"  peer / bridge+fast:                        {r['peer_over_fast']:7.2f}x")


if __name__ == "__main__":
    main()
