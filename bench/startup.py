"""Start-up cost of ``FLOWTRACE_OTEL=1``, and what the program's first traced call costs.

Usage (from the repository root)::

    .venv-3.12/bin/python bench/startup.py               # 7 interleaved repeats
    .venv-3.12/bin/python bench/startup.py --repeats 3   # quicker

Each repeat runs, one fresh process each, side by side: an empty script plainly, then with
``FLOWTRACE_OTEL=1`` (OTLP/HTTP to a live receiver in another process; ``otel-grpc``: the same
over gRPC), and a script whose first statement calls a traced function, in the same modes.
Reported per mode, as medians over the repeats: the wall time of the whole process (start-up,
the script, exit), its CPU time (user + system, less disturbed by the other tenants of a shared
machine), what it adds to the plain run (the median of the per-repeat differences: runs are
measured next to each other), and, for the second script, how long the program's first call
and its next 99 calls took (measured inside the program with ``perf_counter``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import Receiver, base_env, commit  # noqa: E402

MODES = ("plain", "otel", "otel-grpc")
EMPTY = "pass\n"
FIRST_CALL = """\
import json, time

def work(n):
    return n + 1

started = time.perf_counter()
work(1)
first = time.perf_counter() - started
started = time.perf_counter()
for i in range(99):
    work(i)
rest = time.perf_counter() - started
print(json.dumps({"first_ms": first * 1000, "next99_ms": rest * 1000}))
"""


def mode_env(mode: str, env: dict[str, str], endpoint: str, grpc_endpoint: str) -> dict[str, str]:
    """The environment of one mode."""
    env = dict(env)
    if mode == "otel":
        env.update(FLOWTRACE_OTEL="1", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_SERVICE_NAME="bench")
    elif mode == "otel-grpc":
        env.update(FLOWTRACE_OTEL="1", OTEL_EXPORTER_OTLP_ENDPOINT=grpc_endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_SERVICE_NAME="bench")
    return env


def run_once(script: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``script`` once; wall and CPU time of the process, plus what the script printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], env=env, cwd=script.parent,
                          capture_output=True, text=True, timeout=120, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or proc.stderr:
        raise SystemExit(f"bench: {script.name} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result: dict[str, Any] = {"wall_ms": wall * 1000, "cpu_ms": cpu * 1000}
    if proc.stdout.strip():
        result.update(json.loads(proc.stdout))
    return result


def measure(repeats: int, endpoint: str, grpc_endpoint: str,
            folder: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every run, interleaved: per script, per mode, the list of results."""
    scripts = {"empty": folder / "empty.py", "first_call": folder / "first_call.py"}
    scripts["empty"].write_text(EMPTY)
    scripts["first_call"].write_text(FIRST_CALL)
    env = base_env()
    env.pop("PYTHONPATH", None)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {mode: [] for mode in MODES} for name in scripts}
    for script in scripts.values():  # warm the file cache and the .pyc files, unmeasured
        for mode in MODES:
            run_once(script, mode_env(mode, env, endpoint, grpc_endpoint))
    for repeat in range(repeats):
        for name, script in scripts.items():
            for mode in MODES:
                result = run_once(script, mode_env(mode, env, endpoint, grpc_endpoint))
                runs[name][mode].append(result)
        print(f"repeat {repeat + 1}/{repeats} done", file=sys.stderr)
    return runs


def median(values: list[float]) -> float:
    """The median, 0 for no values."""
    return statistics.median(values) if values else 0.0


def added(runs: dict[str, list[dict[str, Any]]], mode: str, key: str) -> float:
    """The median over repeats of (mode - plain), runs of one repeat side by side."""
    return median([r[key] - p[key] for r, p in zip(runs[mode], runs["plain"], strict=True)])


def report(runs: dict[str, dict[str, list[dict[str, Any]]]], repeats: int) -> None:
    """Print the tables."""
    load = os.getloadavg()[0]
    print(f"Start-up, {repeats} interleaved repeats, medians (Python "
          f"{sys.version.split()[0]}, commit {commit()}, load {load:.1f} on "
          f"{os.cpu_count()} CPUs)\n")
    print("| script | mode | wall ms | added wall ms | CPU ms | added CPU ms |"
          " first call ms | next 99 calls ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, by_mode in runs.items():
        for mode in MODES:
            results = by_mode[mode]
            wall = median([r["wall_ms"] for r in results])
            cpu = median([r["cpu_ms"] for r in results])
            first = median([r["first_ms"] for r in results if "first_ms" in r])
            rest = median([r["next99_ms"] for r in results if "next99_ms" in r])
            calls = (f"{first:.3f} | {rest:.3f}" if name == "first_call" else "- | -")
            print(f"| {name} | {mode} | {wall:.0f} | {added(by_mode, mode, 'wall_ms'):+.0f} | "
                  f"{cpu:.0f} | {added(by_mode, mode, 'cpu_ms'):+.0f} | {calls} |")


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    receiver = Receiver(base_env())
    from flowtrace_otel.testing import OtlpReceiver

    with OtlpReceiver() as grpc_receiver, tempfile.TemporaryDirectory() as tmp:
        try:
            runs = measure(args.repeats, receiver.endpoint, grpc_receiver.grpc_endpoint,
                           Path(tmp))
        finally:
            receiver.close()
    report(runs, args.repeats)


if __name__ == "__main__":
    main()
