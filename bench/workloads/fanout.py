"""An asyncio fan-out: one coroutine gathers 50 tasks, each awaits and does a little work."""

from __future__ import annotations

import asyncio

ROOT = "fan_out"
WIDTH = 50


async def fan_out(width: int) -> int:
    """Start ``width`` tasks and combine their results."""
    results = await asyncio.gather(*(fetch(i) for i in range(width)))
    return combine(results)


async def fetch(i: int) -> dict[str, int]:
    """Pretend I/O (two event-loop round trips) around some work."""
    await asyncio.sleep(0)
    record = transform(i)
    await asyncio.sleep(0)
    return record


def transform(i: int) -> dict[str, int]:
    """A little CPU work on a result."""
    return {"id": i, "score": checksum(str(i) * 10)}


def checksum(text: str) -> int:
    """A toy checksum."""
    return sum(map(ord, text)) % 997


def combine(results: list[dict[str, int]]) -> int:
    """Fold the results."""
    return sum(r["score"] for r in results)
