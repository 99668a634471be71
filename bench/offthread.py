"""CPU on the program's thread per exported span: spans built at each call's end vs on the worker.

Usage (from the repository root)::

    .venv-3.12/bin/python bench/offthread.py [--repeats 5] [--units 300] [--workload request]

Each repeat runs two fresh processes, one per way (``FLOWTRACE_OTEL_BUILD_ON_WORKER=1``, the
default, and ``=0``), exporting OTLP/HTTP to a live receiver. In each, the workload first runs
untraced, then traced; the export worker is kept idle while the traced units run (it has sent
a warm-up trace and waits for its delay: batch and queue are larger than the run), so
``time.thread_time()`` of the program's thread measures what a span costs *there*, with no
second thread competing for the core. The units run in chunks (``--chunk``), each followed
by a flush, timed apart (``time.process_time()``): the work the worker does to build, encode
and send what the program left it, and a queue as small as when the worker keeps up (a queue
holding thousands of spans makes the program's garbage collections slower). ``bench/run.py``'s
``otel`` and ``otel-onthread`` modes measure the same two ways with the worker running
concurrently (its ``thread_cpu`` field).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from harness import EXCLUDE
from harness.worker import MODULES, driver, inputs
import importlib
workload, units, CHUNK = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
module = importlib.import_module(MODULES[workload])
args = inputs(workload, units, 0)
chunks = [args[i:i + CHUNK] for i in range(0, len(args), CHUNK)]
run = driver(module)  # no traced frame below a unit: each unit is a trace of its own
run(args)
t0 = time.thread_time(); run(args); plain = time.thread_time() - t0
from flowtrace_otel import otel
bridge = otel.instrument(exclude=EXCLUDE)
from flowtrace_otel.otel import pipeline
run(args); bridge.force_flush(30000)  # the worker has run once and now waits for its delay
queues = pipeline.trace_queues(bridge.private_provider)
sent = sum(q.sent_spans for q in queues)
traced = flush = 0.0
for part in chunks:  # flushed between chunks: the queue stays small, as when the worker runs
    t0 = time.thread_time(); run(part); traced += time.thread_time() - t0
    c0 = time.process_time(); bridge.force_flush(60000); flush += time.process_time() - c0
spans = sum(q.sent_spans for q in queues) - sent
lost = sum(q.undelivered() for q in queues)
print(json.dumps({"plain": plain, "traced": traced, "flush": flush, "spans": spans, "lost": lost}))
"""


def one(workload: str, units: int, chunk: int, on_worker: str,
        env: dict[str, str]) -> dict[str, Any]:
    """One process: untraced and traced thread CPU, and the flush's CPU."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(BENCH), workload, str(units),
                           str(chunk)],
                          env={**env, "FLOWTRACE_OTEL_BUILD_ON_WORKER": on_worker},
                          capture_output=True, text=True, timeout=600, check=True, cwd=BENCH)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Run the repeats and print per-span figures and their ratio (medians)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=10, help="units between flushes")
    parser.add_argument("--workload", default="request", choices=("request", "fib", "fanout"))
    args = parser.parse_args()
    from flowtrace_otel.testing import OtlpReceiver

    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "FLOWTRACE_OTEL", "PYTHONPATH", "TRACEPARENT"))}
    big = str(10**7)
    rows: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    with OtlpReceiver(grpc=False) as receiver:  # every span the timed run made is sent to it
        env = {**base, **receiver.env(), "PYTHONHASHSEED": "0", "OTEL_BSP_SCHEDULE_DELAY": "600000",
               "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": big, "FLOWTRACE_OTEL_QUEUE_SPANS": big}
        for repeat in range(args.repeats):
            for on_worker in ("1", "0"):
                result = one(args.workload, args.units, args.chunk, on_worker, env)
                assert result["lost"] == 0, result
                rows[on_worker].append(result)
                print(f"  repeat {repeat + 1} BUILD_ON_WORKER={on_worker}: {result}", flush=True)
    figures: dict[str, dict[str, float]] = {}
    for on_worker, results in rows.items():
        def per_span(key: str, results: list[dict[str, float]] = results) -> float:
            return statistics.median(
                (r[key] - (r["plain"] if key == "traced" else 0)) / r["spans"] * 1e6
                for r in results)
        figures[on_worker] = {"thread": per_span("traced"), "flush": per_span("flush")}
    ratios = [(a["traced"] - a["plain"]) / (b["traced"] - b["plain"])
              for a, b in zip(rows["1"], rows["0"], strict=True)]
    print(f"\n{args.workload}, {args.units} units, {args.repeats} repeats (medians), "
          f"Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}")
    print("| spans built | program's thread CPU per span | flush CPU per span (worker) |")
    print("| --- | ---: | ---: |")
    for on_worker, label in (("0", "at each call's end (before)"), ("1", "on the worker (now)")):
        f = figures[on_worker]
        print(f"| {label} | {f['thread']:.1f} µs | {f['flush']:.1f} µs |")
    print(f"program's thread overhead, worker ÷ call's end: {statistics.median(ratios):.2f} "
          f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
