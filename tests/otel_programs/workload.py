"""Functions traced by the bridge tests (this folder is the tests' user code)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace


class Store:
    def save(self, key: str, value: int, api_key: str = "k-123") -> bool:
        return validate(value)


def validate(value: int) -> bool:
    return value >= 0


def handler(order_id: int, *items: str, **flags: bool) -> dict[str, int]:
    Store().save(f"order-{order_id}", order_id)
    return {"id": order_id, "items": len(items)}


def fails(reason: str) -> None:
    raise ValueError(f"cannot: {reason}")


def catches() -> str:
    try:
        fails("first")
    except ValueError:
        return "recovered"
    return "unreachable"


def propagates() -> None:
    fails("second")


def with_library_span(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("library.call"):
        callback(1)


def callback(n: int) -> int:
    return n


def annotate() -> None:
    span = trace.get_current_span()
    span.set_attribute("app.user", "ada")
    span.add_event("checkpoint", {"step": 1})


def parse_line(line: str) -> str:
    return line.strip()


def parse_many(count: int) -> int:
    return sum(len(parse_line(f" line {i} ")) for i in range(count))


def wide(count: int) -> None:
    for i in range(count):
        leaf_a(i)
        leaf_b(i)


def leaf_a(i: int) -> int:
    return i


def leaf_b(i: int) -> int:
    return -i


def spawns_thread() -> None:
    worker = threading.Thread(target=callback, args=(7,))
    worker.start()
    worker.join()


def submits_work() -> list[int]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(callback, [1, 2, 3]))


async def fetch(n: int) -> int:
    await asyncio.sleep(0)
    return callback(n)


async def fan_out() -> list[int]:
    return list(await asyncio.gather(fetch(1), fetch(2)))


def run_async() -> list[int]:
    return asyncio.run(fan_out())


def numbers(limit: int):  # type: ignore[no-untyped-def]
    for i in range(limit):
        yield callback(i)


def consume() -> int:
    total = 0
    for value in numbers(3):
        total += leaf_a(value)
    return total


def catches_after(count: int) -> str:
    for i in range(count):
        leaf_a(i)
    try:
        fails("late")
    except ValueError:
        return "recovered"
    return "unreachable"


def serve(requests: int, handle: Callable[[int], object]) -> None:
    """A server loop inside user code: ``handle`` stands for the library that serves a request."""
    for i in range(requests):
        handle(i)


def view(i: int) -> int:
    return leaf_a(i) + leaf_b(i)


def first_number() -> int:
    for value in numbers(3):
        return value  # the generator is closed while suspended (3.13: without an event)
    return -1
