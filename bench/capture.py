"""Per-value capture cost: the Python reference Capturer against its C twin, side by side.

Typical argument values (what the tracer's ``args_of`` hands the capturer one by one) are
captured in loops by the reference (``Capturer(native=False)``), by the C twin through
``Capturer.__call__`` (a Python frame first) and by ``Capturer.call``, the C object itself,
which is what the tracer calls; interleaved, CPU medians of --repeat (7). Prints ns per value
and the ratios. Run:
``.venv-3.12/bin/python bench/capture.py`` (or ``--quick``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from flowtrace_otel.capture import Capturer
from flowtrace_otel.redaction import DEFAULT_REDACT


class Order:
    """A user object: captured as a placeholder."""

    def __init__(self, sku: str) -> None:
        """Hold a field."""
        self.sku = sku


def typical_values() -> list[tuple[str, object]]:
    """Values as they come as arguments and results of real calls."""
    return [
        ("int", 21),
        ("str", "alice@example.com"),
        ("float", 3.25),
        ("None", None),
        ("bool", True),
        ("bytes", b"\x00\x01payload"),
        ("tuple of 3 scalars", (1, "two", 3.0)),
        ("list of 8 ints", list(range(8))),
        ("dict, 3 str keys", {"id": 7, "name": "widget", "qty": 2}),
        ("kwargs with a secret", {"user": "ann", "password": "hunter2"}),
        ("set of 4 strs", {"a", "b", "c", "d"}),
        ("long str (1,000)", "x" * 1000),
        ("list of 100 ints", list(range(100))),
        ("nested dict/list", {"items": [{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 3}],
                              "id": 1}),
        ("user object", Order("A-1")),
        ("function", typical_values),
    ]


def cpu_ns_per_call(func: Callable[[object], str], value: object, loops: int) -> float:
    """CPU ns per call of ``func(value)``, over ``loops`` calls."""
    start = time.process_time_ns()
    for _ in range(loops):
        func(value)
    return (time.process_time_ns() - start) / loops


def main() -> None:
    """Measure, interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--loops", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="3 repeats of 2,000 loops")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.loops = 3, 2_000
    reference = Capturer(redact=DEFAULT_REDACT, native=False)
    hooked = Capturer(redact=DEFAULT_REDACT, native=True)
    bare = hooked.call  # the C object itself, without Capturer.__call__'s frame
    assert bare is not hooked.__call__
    rows = []
    for name, value in typical_values():
        assert reference(value) == hooked(value) == bare(value), name
        times: dict[str, list[float]] = {"python": [], "c": [], "bare": []}
        for _ in range(args.repeat):  # interleaved: the machine's noise hits all three
            times["python"].append(cpu_ns_per_call(reference, value, args.loops))
            times["c"].append(cpu_ns_per_call(hooked, value, args.loops))
            times["bare"].append(cpu_ns_per_call(bare, value, args.loops))
        py, c, b = (statistics.median(times[k]) for k in ("python", "c", "bare"))
        rows.append((name, py, c, b))
    print("| value | Python ns | C ns, `capturer(v)` | C ns, `capturer.call(v)` "
          "| Python / C | Python / C `.call` |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, py, c, b in rows:
        print(f"| {name} | {py:,.0f} | {c:,.0f} | {b:,.0f} | {py / c:.1f}x | {py / b:.1f}x |")
    geo = statistics.geometric_mean([py / c for _, py, c, _ in rows])
    geo_call = statistics.geometric_mean([py / b for _, py, _, b in rows])
    print(f"\ngeometric mean Python / C: {geo:.1f}x via capturer(v), {geo_call:.1f}x via "
          f".call(v) ({args.repeat} interleaved repeats of {args.loops:,} captures, CPU medians)")


if __name__ == "__main__":
    main()
