"""A lazy generator pipeline, a coroutine-style generator driven with send(), and early close.

Run it:
    flowtrace-otel run examples/generator_pipeline.py          # tree on stderr (no backend)
    FLOWTRACE_OTEL=1 python examples/generator_pipeline.py     # spans to the OTLP endpoint

The trace shows each generator once, as one span from its first ``next()`` to its end, with how
often it resumed: ``read_records`` -> ``parse`` -> ``only_valid`` chained lazily under
``pipeline``; ``running_average`` fed by ``send()`` from ``averages``; and ``numbers``, which
``first_two`` closes after two values (its span ends there, marked closed, and its ``finally``
still runs).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator

RAW = "3\n14\nnot a number\n15\n92\n"


def read_records(text: str) -> Iterator[str]:
    for line in text.splitlines():
        yield line.strip()


def parse(lines: Iterable[str]) -> Iterator[int | None]:
    for line in lines:
        yield int(line) if line.isdigit() else None


def only_valid(values: Iterable[int | None]) -> Iterator[int]:
    for value in values:
        if value is not None:
            yield value


def pipeline(text: str) -> list[int]:
    return list(only_valid(parse(read_records(text))))


def running_average() -> Generator[float, float, None]:
    total, count, average = 0.0, 0, 0.0
    while True:
        value = yield average
        total, count = total + value, count + 1
        average = total / count


def averages(values: list[int]) -> list[float]:
    averager = running_average()
    next(averager)  # prime it
    results = [averager.send(value) for value in values]
    averager.close()
    return results


def numbers(limit: int) -> Iterator[int]:
    try:
        yield from range(limit)
    finally:
        print("numbers: cleaned up")


def first_two(limit: int) -> list[int]:
    source = numbers(limit)
    taken = [next(source), next(source)]
    source.close()  # stop early: the generator never reaches its end
    return taken


def main() -> None:
    values = pipeline(RAW)
    print("valid:", values)
    print("averages:", averages(values))
    print("first two:", first_two(1000))


if __name__ == "__main__":
    main()
