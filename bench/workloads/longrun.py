"""A long run for memory: one trace of millions of small calls."""

from __future__ import annotations

ROOT = "long_run"


def long_run(steps: int) -> int:
    """Call :func:`step` ``steps`` times (1 + 2 * steps calls in all)."""
    total = 0
    for i in range(steps):
        total += step(i)
    return total


def step(i: int) -> int:
    """One step: a call and a little arithmetic."""
    return leaf(i) + 1


def leaf(i: int) -> int:
    """The innermost call."""
    return i & 7
