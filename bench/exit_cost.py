"""What a big ``flowtrace-otel run`` costs after the program ends, and its peak memory.

Each case runs ``flowtrace-otel run`` (in-process, through ``cli.main``) in a fresh process on
a program of N calls. The program notes the time its last line ran; the exit cost is the wall
time from there until the tree is printed (``session.stop()``: ending open calls and building
the events, folding, formatting, writing). Peak RSS is the whole process's ``ru_maxrss``.

Shapes: ``siblings`` (``main`` calls ``tiny`` N times: folds into one line), ``roots`` (N
outermost calls from module code), ``fib`` (a recursive tree with no repeated siblings: bounded
by the session's ``max_events``).

    .venv-3.12/bin/python bench/exit_cost.py [--quick] [--calls 300000 1300000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PROGRAMS = {
    "siblings": """
        import sys, time
        def tiny(i):
            return i + 1
        def main(n):
            total = 0
            for i in range(n):
                total += tiny(i)
            return total
        main(int(sys.argv[1]))
        print(time.perf_counter(), file=open(sys.argv[2], "w"))
    """,
    "roots": """
        import sys, time
        def tiny(i):
            return i + 1
        for i in range(int(sys.argv[1])):
            tiny(i)
        print(time.perf_counter(), file=open(sys.argv[2], "w"))
    """,
    "fib": """
        import sys, time
        def fib(n):
            return n if n <= 1 else fib(n - 1) + fib(n - 2)
        calls = [1, 1]  # calls made by fib(n), counted untraced (no recursion)
        while 1 + calls[-1] + calls[-2] <= int(sys.argv[1]):
            calls.append(1 + calls[-1] + calls[-2])
        fib(len(calls) - 1)  # the largest fib under the call budget
        print(time.perf_counter(), file=open(sys.argv[2], "w"))
    """,
}

DRIVER = """
import io, resource, sys, time
from flowtrace_otel.cli import main
err = io.StringIO()
sys.stderr = err
code = main(["run", sys.argv[1], sys.argv[2], sys.argv[3]])
done = time.perf_counter()
ended = float(open(sys.argv[3]).read())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
lines = err.getvalue().count("\\n")
print(f"{code} {done - ended:.3f} {peak:.1f} {lines}", file=sys.__stdout__)
"""


def measure(shape: str, calls: int, folder: Path) -> tuple[float, float, int]:
    """Exit cost (s), peak RSS (MB) and tree lines of one traced run."""
    program = folder / f"{shape}.py"
    program.write_text(textwrap.dedent(PROGRAMS[shape]))
    ended = folder / "ended.txt"
    done = subprocess.run([sys.executable, "-c", DRIVER, str(program), str(calls), str(ended)],
                          capture_output=True, text=True, check=True, cwd=folder, timeout=3600)
    code, cost, peak, lines = done.stdout.split()
    assert code == "0", done.stderr
    return float(cost), float(peak), int(lines)


def main() -> None:
    """Print one table row per (shape, calls)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs (a smoke test)")
    parser.add_argument("--calls", type=int, nargs="+", default=[300_000, 1_300_000])
    parser.add_argument("--shapes", nargs="+", default=list(PROGRAMS), choices=list(PROGRAMS))
    ns = parser.parse_args()
    sizes = [20_000] if ns.quick else ns.calls
    print(f"Python {sys.version.split()[0]}")
    print("| shape | calls | exit cost | peak RSS | tree lines |")
    print("| --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in ns.shapes:
            for calls in sizes:
                cost, peak, lines = measure(shape, calls, Path(tmp))
                print(f"| {shape} | {calls:,} | {cost:.2f} s | {peak:.1f} MB | {lines:,} |",
                      flush=True)


if __name__ == "__main__":
    main()
