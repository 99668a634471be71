"""One measurement in a fresh process: one workload under one mode; prints a JSON line.

``python -m harness.worker '{"workload": "request", "mode": "otel", "units": 300, ...}'``
(run from ``bench/``). The driver loop is ``deque(map(root, inputs), 0)``: C code calling the
workload's root function, so each unit is a trace of its own. Timing covers the timed units and
the final flush of the span pipeline; CPU is ``time.process_time()``, all threads of this process
(the exporter's included), and not the receiver's, which runs in another process.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import importlib
import itertools
import json
import os
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

from harness import EXCLUDE

PAYLOADS = 64
TEXTS = 8


def inputs(workload: str, count: int, steps: int) -> list[Any]:
    """The arguments of ``count`` units of ``workload``."""
    if workload == "fib":
        from workloads import fib
        return [fib.N] * count
    if workload == "request":
        from workloads import request
        payloads = request.make_payloads(PAYLOADS)
        return list(itertools.islice(itertools.cycle(payloads), count))
    if workload == "stdlib":
        from workloads import stdlib_heavy
        texts = stdlib_heavy.make_texts(TEXTS)
        return list(itertools.islice(itertools.cycle(texts), count))
    if workload == "fanout":
        from workloads import fanout
        return [fanout.WIDTH] * count
    if workload == "longrun":
        return [steps] * count
    raise SystemExit(f"unknown workload {workload!r}")


MODULES = {"fib": "workloads.fib", "request": "workloads.request",
           "stdlib": "workloads.stdlib_heavy", "fanout": "workloads.fanout",
           "longrun": "workloads.longrun"}


def driver(module: types.ModuleType) -> Callable[[list[Any]], None]:
    """Run units with no user frame below them (the root is looked up after decoration)."""
    root = getattr(module, module.ROOT)
    if asyncio.iscoroutinefunction(root):
        loop = asyncio.new_event_loop()
        return lambda args: collections.deque(map(loop.run_until_complete, map(root, args)), 0)
    return lambda args: collections.deque(map(root, args), 0)


class Mode:
    """Set-up, flush and tear-down of one tracing mode."""

    def __init__(self, name: str, module: types.ModuleType, endpoint: str) -> None:
        """Switch the mode on (before any unit runs)."""
        self.name = name
        self.flush: Callable[[], object] = lambda: None
        self.extra: dict[str, Any] = {}
        self._session: Any = None
        self._provider: Any = None
        if name == "floor":
            from harness import floor
            floor.install([module])
        elif name in ("core", "core-mem", "core-python", "core-lean"):
            from flowtrace_otel import TraceSession
            # every call kept (no folding): the core's full recording cost, and the call count
            # the other modes' per-call figures divide by; core-lean records the calls alone
            lean = {"capture_args": False, "capture_result": False} if name == "core-lean" else {}
            self._session = TraceSession(exclude=EXCLUDE, record_fold_after=0,
                                         max_events=0, **lean).start()
        elif name in ("app", "app-peer"):
            from harness import app
            # the application's provider (opentelemetry-instrument's set-up): never shut down
            # here, as an application's provider is shut down at exit by the SDK
            provider, self.extra["provider_by"] = app.provider()
            self.flush = provider.force_flush
            if name == "app":
                from flowtrace_otel import otel
                otel.instrument(exclude=EXCLUDE)  # finds and uses the global provider
            else:
                from harness import peer
                peer.decorate_module(module, provider.get_tracer("bench-peer"))
        elif name.startswith("otel"):
            from flowtrace_otel import otel
            bridge = otel.instrument(exclude=EXCLUDE)
            self.flush = getattr(bridge, "force_flush", None) or (
                lambda: [provider.force_flush() for provider in bridge.providers()])
        elif name in ("peer", "peer-none"):
            from harness import peer
            self._provider = peer.provider(endpoint if name == "peer" else None)
            peer.decorate_module(module, self._provider.get_tracer("bench-peer"))
            self.flush = self._provider.force_flush
        elif name != "plain":
            raise SystemExit(f"unknown mode {name!r}")

    def stop(self) -> None:
        """Switch the mode off; the core reports how many calls it recorded."""
        if self._session is not None:
            self.extra["events"] = len(self._session.stop())
        if self.name.startswith("otel") or self.name == "app":
            from flowtrace_otel import otel
            otel.uninstrument()
        if self._provider is not None:
            self._provider.shutdown()


def rss_bytes() -> int:
    """Resident set size now, from /proc."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss(threading.Thread):
    """Samples the RSS every 50 ms (harness code: not traced) and keeps the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="bench-rss")
        self.peak = rss_bytes()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_bytes())

    def finish(self) -> int:
        """Stop sampling; the peak RSS seen."""
        self.done.set()
        self.join()
        return max(self.peak, rss_bytes())


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec`` and return the figures."""
    workload, mode_name = spec["workload"], spec["mode"]
    units, warmup, steps = spec["units"], spec.get("warmup", 1), spec.get("steps", 0)
    module = importlib.import_module(MODULES[workload])
    timed_args = inputs(workload, units, steps)
    warm_args = inputs(workload, warmup, min(steps, 1000))
    if mode_name == "core-mem":
        import tracemalloc
        tracemalloc.start()
    mode = Mode(mode_name, module, spec.get("endpoint", ""))
    drive = driver(module)
    drive(warm_args)
    mode.flush()
    gc.collect()
    out: dict[str, Any] = {"workload": workload, "mode": mode_name, "units": units,
                           "warmup": warmup, "python": sys.version.split()[0]}
    if mode_name == "core-mem":
        import tracemalloc
        before = tracemalloc.get_traced_memory()[0]
        drive(timed_args)
        during = tracemalloc.get_traced_memory()[0]
        mode.stop()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        out.update(mode.extra, recorded_bytes=during - before, event_bytes=after - before)
        return out
    sampler = PeakRss() if workload == "longrun" else None
    rss0 = rss_bytes()
    if sampler is not None:
        sampler.start()
    cpu0, t0, thread0 = time.process_time(), time.perf_counter(), time.thread_time()
    drive(timed_args)
    thread_cpu = time.thread_time() - thread0  # the program's thread alone, before the flush
    mode.flush()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if sampler is not None:
        out.update(rss_before=rss0, rss_after=rss_bytes(), rss_peak=sampler.finish())
    mode.stop()
    out.update(mode.extra, wall=wall, cpu=cpu, thread_cpu=thread_cpu)
    return out


def main() -> None:
    """Read the spec from argv, print the result as one JSON line."""
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure(spec)), flush=True)


if __name__ == "__main__":
    main()
