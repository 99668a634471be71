"""The worst case for a call tracer: a tiny recursive function, nothing but calls."""

from __future__ import annotations

ROOT = "fib"
N = 22  #: the benchmark's unit is fib(N), the size issue 13's targets name


def fib(n: int) -> int:
    """The n-th Fibonacci number, the slow way (fib(22) makes 57,313 calls)."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def calls(n: int) -> int:
    """How many calls ``fib(n)`` makes."""
    a, b = 1, 1  # calls(0), calls(1)
    for _ in range(n - 1):
        a, b = b, a + b + 1
    return b if n >= 1 else a
