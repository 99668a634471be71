"""asyncio fan-out three ways: gather, a TaskGroup, and a fire-then-await create_task.

Run it:
    flowtrace-otel run examples/asyncio_fanout.py          # tree on stderr (no backend needed)
    FLOWTRACE_OTEL=1 python examples/asyncio_fanout.py     # spans to the OTLP endpoint

The trace shows each coroutine under the coroutine that started it, even though they run
interleaved on one event loop: ``gather_prices`` -> three ``fetch_price``; ``score_all`` -> one
``score`` per task of its TaskGroup (tasks named ``score-0`` ...); ``refresh`` -> the
``heartbeat`` task it created, which calls ``beat`` three times. A coroutine's span covers
its whole life, suspensions included (the tree says how often it resumed).
"""

from __future__ import annotations

import asyncio

PRICES = {"apple": 0.5, "pear": 0.75, "plum": 1.25}


async def fetch_price(item: str, delay: float) -> float:
    await asyncio.sleep(delay)  # stands in for I/O
    return PRICES[item]


async def gather_prices() -> list[float]:
    return await asyncio.gather(
        fetch_price("apple", 0.003), fetch_price("pear", 0.001), fetch_price("plum", 0.002))


async def score(n: int) -> int:
    await asyncio.sleep(0.001 * (3 - n))
    return n * n


async def score_all(count: int) -> list[int]:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(score(n), name=f"score-{n}") for n in range(count)]
    return [task.result() for task in tasks]


def beat(n: int) -> str:
    return f"beat {n}"


async def heartbeat(times: int) -> list[str]:
    beats = []
    for n in range(times):
        beats.append(beat(n))
        await asyncio.sleep(0.001)
    return beats


async def refresh() -> list[str]:
    task = asyncio.create_task(heartbeat(3), name="heartbeat")
    await asyncio.sleep(0)  # let it start while we do other work
    return await task


async def main() -> None:
    print("prices:", await gather_prices())
    print("scores:", await score_all(3))
    print("heartbeat:", await refresh())


if __name__ == "__main__":
    asyncio.run(main())
