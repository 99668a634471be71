"""The native building block's cost on fib(22), against the floor of any pure-Python tracer.

Three runs of the same workload, interleaved, medians of --repeat (7) each:
  plain    no monitoring at all
  floor    sys.monitoring PY_START + PY_RETURN with no-op Python callbacks
  native   flowtrace_otel._native's C callbacks: the once-per-code decision (co_extra), the
           per-thread stack push/pop and two CLOCK_MONOTONIC reads per call
  no_clock the same without the clock reads (start(..., timed=False)), to show their share
Prints the overhead per call (CPU ns over plain) and native's overhead as a ratio of the
floor's.  Run: ``./dev native-floor`` (every Python), or
``.venv-3.12/bin/python bench/native_floor.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from types import CodeType

TOOL = 4
EVENTS = sys.monitoring.events


def fib(n: int) -> int:
    """The workload: one Python call per node."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def calls_of_fib(n: int) -> int:
    """How many calls fib(n) makes."""
    a, b = 1, 1
    for _ in range(n):
        a, b = b, a + b + 1
    return a


def timed(n: int) -> int:
    """CPU nanoseconds of one fib(n)."""
    start = time.process_time_ns()
    fib(n)
    return time.process_time_ns() - start


def plain(n: int) -> int:
    """fib(n) untraced."""
    return timed(n)


def floor(n: int) -> int:
    """fib(n) under no-op Python callbacks (the pure-Python floor)."""
    def on_start(code: CodeType, offset: int) -> None:
        return None

    def on_return(code: CodeType, offset: int, value: object) -> None:
        return None

    sys.monitoring.use_tool_id(TOOL, "native_floor")
    sys.monitoring.register_callback(TOOL, EVENTS.PY_START, on_start)
    sys.monitoring.register_callback(TOOL, EVENTS.PY_RETURN, on_return)
    sys.monitoring.set_events(TOOL, EVENTS.PY_START | EVENTS.PY_RETURN)
    try:
        return timed(n)
    finally:
        sys.monitoring.set_events(TOOL, 0)
        sys.monitoring.register_callback(TOOL, EVENTS.PY_START, None)
        sys.monitoring.register_callback(TOOL, EVENTS.PY_RETURN, None)
        sys.monitoring.free_tool_id(TOOL)


def native(n: int, clock: bool = True) -> int:
    """fib(n) under the C callbacks, fib wanted, everything else DISABLEd."""
    from flowtrace_otel import _native

    fib_code = fib.__code__
    _native.start(TOOL, lambda code: code is fib_code, timed=clock)
    try:
        return timed(n)
    finally:
        _native.stop()


def native_no_clock(n: int) -> int:
    """The same without the two clock reads: what the callbacks and the stack cost alone."""
    return native(n, clock=False)


def clock_read_ns() -> float:
    """What one CLOCK_MONOTONIC read costs, seen from Python (median of 7 x 200k reads)."""
    def per_read(func: Callable[[], object]) -> float:
        start = time.perf_counter_ns()
        for _ in range(200_000):
            func()
        return (time.perf_counter_ns() - start) / 200_000

    clock = statistics.median(per_read(time.monotonic_ns) for _ in range(7))
    bare = statistics.median(per_read(int) for _ in range(7))
    return clock - bare


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=22)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    modes: dict[str, Callable[[int], int]] = {"plain": plain, "floor": floor, "native": native,
                                              "no_clock": native_no_clock}
    samples: dict[str, list[int]] = {name: [] for name in modes}
    for run in modes.values():
        run(args.n)  # warm up (the first native run decides and DISABLEs once)
    for _ in range(args.repeat):
        for name, run in modes.items():
            samples[name].append(run(args.n))
    calls = calls_of_fib(args.n)
    per_call = {name: statistics.median(s) / calls for name, s in samples.items()}
    over = {name: per_call[name] - per_call["plain"] for name in ("floor", "native", "no_clock")}
    version = ".".join(map(str, sys.version_info[:3]))
    print(f"Python {version}, fib({args.n}) = {calls} calls, CPU medians of {args.repeat}")
    print(f"  plain                      {per_call['plain']:7.1f} ns/call")
    print(f"  floor  (no-op Python cbs)  {per_call['floor']:7.1f} ns/call  "
          f"overhead {over['floor']:6.1f} ns")
    print(f"  native (C cbs+stack+clock) {per_call['native']:7.1f} ns/call  "
          f"overhead {over['native']:6.1f} ns")
    print(f"  native without the clock   {per_call['no_clock']:7.1f} ns/call  "
          f"overhead {over['no_clock']:6.1f} ns")
    print(f"  one CLOCK_MONOTONIC read here: {clock_read_ns():.1f} ns "
          f"(time.monotonic_ns() minus a bare builtin call, from Python)")
    print(f"  native overhead / floor overhead = {over['native'] / over['floor']:.2f}x; "
          f"without the clock {over['no_clock'] / over['floor']:.2f}x")


if __name__ == "__main__":
    main()
