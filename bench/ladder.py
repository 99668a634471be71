"""Where a tracer's time goes: sys.monitoring callbacks on fib(20), one ingredient at a time.

Each rung adds one thing a call tracer does per call to the previous rung's PY_START/PY_RETURN
callbacks, and prints the extra CPU per call over the untraced run (best of several runs).
It explains the overhead model in docs/performance.md; ``bench/run.py`` prints it at the end.

    .venv-3.12/bin/python bench/ladder.py [--quick]
"""

from __future__ import annotations

import contextvars
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType
from typing import Any

M = sys.monitoring
E = M.events
DISABLE = M.DISABLE
N = 20
CALLS = 21891  # calls made by fib(20)


def fib(n: int) -> int:
    """The worst case: a tiny recursive function."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


Pair = tuple[Callable[[CodeType, int], Any], Callable[[CodeType, int, object], Any]]


def rungs() -> list[tuple[str, Pair]]:
    """The callback pairs, cheapest first."""
    code = fib.__code__
    user = frozenset({id(code)})
    infos = {id(code): (code, object())}
    tls = threading.local()
    tls.stack = []
    clock = time.perf_counter_ns
    var: contextvars.ContextVar[object] = contextvars.ContextVar("ladder", default=None)
    blank: list[Any] = [None] * 24
    kept: list[list[Any]] = []
    getframe = sys._getframe

    def floor_start(c: CodeType, o: int) -> Any:
        return None if id(c) in user else DISABLE

    def floor_return(c: CodeType, o: int, r: object) -> Any:
        return None if id(c) in user else DISABLE

    def stack_start(c: CodeType, o: int) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        tls.stack.append(e)
        return None

    def stack_return(c: CodeType, o: int, r: object) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        tls.stack.pop()
        return None

    def clock_start(c: CodeType, o: int) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        tls.stack.append(clock())
        return None

    def clock_return(c: CodeType, o: int, r: object) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        tls.stack.pop()
        clock()
        return None

    def record_start(c: CodeType, o: int) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        rec = blank.copy()
        rec[0] = e
        rec[5] = clock()
        tls.stack.append(rec)
        return None

    def record_return(c: CodeType, o: int, r: object) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        now = clock()
        tls.stack.pop()[6] = now
        return None

    def context_start(c: CodeType, o: int) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        rec = blank.copy()
        rec[0] = e
        rec[12] = var.get()
        rec[5] = clock()
        tls.stack.append(rec)
        return None

    def capture_start(c: CodeType, o: int) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        rec = blank.copy()
        rec[0] = e
        rec[12] = var.get()
        rec[7] = repr(getframe(1).f_locals["n"])
        rec[5] = clock()
        tls.stack.append(rec)
        return None

    def capture_return(c: CodeType, o: int, r: object) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        now = clock()
        rec = tls.stack.pop()
        rec[6] = now
        rec[8] = repr(r)
        return None

    def keep_return(c: CodeType, o: int, r: object) -> Any:
        e = infos.get(id(c))
        if e is None or e[0] is not c:
            return DISABLE
        now = clock()
        rec = tls.stack.pop()
        rec[6] = now
        rec[8] = repr(r)
        kept.append(rec)
        return None

    return [
        ("no-op callbacks, user code decided by one set lookup (the floor)",
         (floor_start, floor_return)),
        ("+ per-code cache lookup and a per-thread stack push/pop", (stack_start, stack_return)),
        ("+ two clock reads (start and end time)", (clock_start, clock_return)),
        ("+ a 24-field list record per call", (record_start, record_return)),
        ("+ ContextVar.get per call (the OTel context)", (context_start, record_return)),
        ("+ repr of the argument (via f_locals) and of the result",
         (capture_start, capture_return)),
        ("+ keeping every record (an in-memory session)", (capture_start, keep_return)),
    ]


def cpu_per_call(repeats: int) -> float:
    """Best CPU ns per fib call over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fib(N)
        best = min(best, time.process_time() - start)
    return best / CALLS * 1e9


def main() -> None:
    """Print the ladder as a markdown table."""
    repeats = 3 if "--quick" in sys.argv else 9
    tool_id = next((i for i in (3, 4) if M.get_tool(i) is None), None)
    if tool_id is None:
        raise SystemExit("ladder: sys.monitoring tool ids 3 and 4 are both taken")
    M.use_tool_id(tool_id, "bench-ladder")
    plain = cpu_per_call(repeats)
    print(f"| fib({N}) under callbacks that do ... | extra CPU per call |")
    print("| --- | ---: |")
    print(f"| nothing (untraced: {plain:.0f} ns per call) | – |")
    for label, (on_start, on_return) in rungs():
        M.register_callback(tool_id, E.PY_START, on_start)
        M.register_callback(tool_id, E.PY_RETURN, on_return)
        M.set_events(tool_id, E.PY_START | E.PY_RETURN)
        cost = cpu_per_call(repeats) - plain
        M.set_events(tool_id, 0)
        print(f"| {label} | {cost:,.0f} ns |")
    M.free_tool_id(tool_id)


if __name__ == "__main__":
    main()
