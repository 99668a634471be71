"""The benchmark: every workload under every mode, side by side, one fresh process per run.

Usage (from the repository root)::

    .venv-3.12/bin/python bench/run.py            # full run, a few minutes
    .venv-3.12/bin/python bench/run.py --quick    # smoke run, well under a minute

Modes: ``plain`` (untraced); ``floor`` (no-op ``sys.monitoring`` callbacks, the least a
pure-Python tracer can cost); ``core`` (:class:`flowtrace_otel.TraceSession`, in memory, every
call's arguments and result captured); ``core-lean`` (the same recording the calls alone);
``otel`` (``flowtrace_otel.otel.instrument()`` exporting OTLP/HTTP to a live receiver);
``otel-sampled`` (the same with ``OTEL_TRACES_SAMPLER=traceidratio``, ratio 0.1); ``otel-off``
(the same with ``OTEL_TRACES_SAMPLER=always_off``: what an unsampled trace costs); ``peer``
(hand-written spans on the same functions through the stock SDK and OTLP/HTTP exporter).
On the request workload also ``app`` and ``app-peer``: the application's own provider set up as
``opentelemetry-instrument`` sets it up (stock ``BatchSpanProcessor`` + stock OTLP gRPC
exporter; the worker runs under the real ``opentelemetry-instrument`` command when the venv has
it), with ``instrument()`` using that provider, and with the hand-written spans on it.

Repeats are interleaved (plain, floor, ..., peer, plain, floor, ...); times are medians, and
each ratio is the median of the ratios of one repeat (runs measured next to each other).
Ratios use the CPU time of the traced process (``time.process_time()``: all its threads, the
span exporter's included; the receiver runs in another process), which the other tenants of a
shared machine disturb far less than wall time; wall-time ratios are shown beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from workloads import fib  # noqa: E402

MODES = ("plain", "floor", "core-lean", "core", "otel", "otel-sampled", "otel-off", "peer")
#: run by default on the request workload only (issue 13's target under the app's provider)
APP_MODES = ("app", "app-peer")
APP_WORKLOADS = ("request",)
#: not run by default (``--modes``): the bridge without argument and return-value capture,
#: the bridge with the stock OTLP encoder (``FLOWTRACE_OTEL_FAST_EXPORT=0``), both span
#: paths with no exporter (what building spans costs without encoding them), and the core
#: with ``FLOWTRACE_OTEL_CORE=python`` (the pure-Python reference capture instead of the C one)
EXTRA_MODES = ("otel-lean", "otel-none", "otel-stock", "peer-none", "core-python",
               "otel-onthread")
EXPORTING = ("otel", "otel-sampled", "otel-lean", "otel-stock", "peer", "otel-onthread",
             *APP_MODES)
LEAN_ENV = {"FLOWTRACE_OTEL_CAPTURE_ARGS": "0", "FLOWTRACE_OTEL_CAPTURE_RESULT": "0"}
#: units per run, per mode (about half a second of CPU each here); the rest use "default"
UNITS: dict[str, dict[str, int]] = {
    "fib": {"default": 2, "plain": 80, "floor": 40, "core-lean": 4, "otel-sampled": 8,
            "otel-off": 20, "peer": 1},
    "request": {"default": 150, "plain": 10000, "floor": 10000, "core": 500, "core-lean": 1000,
                "otel-sampled": 1000, "otel-off": 5000},
    "stdlib": {"default": 300},
    "fanout": {"default": 40, "plain": 1000, "floor": 1000, "core": 200, "otel-sampled": 200,
               "otel-off": 500},
}
#: runs a smoke run does without a warm-up unit: fib(22) with a hand-written span per call takes
#: seconds a unit (the smoke run only shows that the report renders; its figures are noise)
QUICK_NO_WARMUP = {("fib", "peer")}
#: more repeats where the effect to resolve is a few percent (the stdlib-heavy target is 3%)
REPEAT_FACTOR = {"stdlib": 3}
WHAT = {
    "fib": f"fib({fib.N})",
    "request": "one request: JSON in, ~60 user calls, JSON out",
    "stdlib": "one document: regex, Counter, sort, statistics, JSON (3 user calls)",
    "fanout": "asyncio.gather of 50 tasks",
}
LONG_RUN_CALLS = 10_000_000
SAMPLED_ENV = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
#: the launcher of the app modes, when this venv has it (else the harness sets the provider up)
INSTRUMENT_COMMAND = Path(sys.executable).parent / "opentelemetry-instrument"
#: what ``opentelemetry-instrument`` reads for the app modes: the stock OTLP gRPC exporter, the
#: stock BatchSpanProcessor with the same queue as ours and the peer's (the default 2,048 drops
#: spans of the request workload), no metrics or logs pipeline (nothing in the bench emits them)
APP_ENV = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none", "OTEL_BSP_MAX_QUEUE_SIZE": "16384",
           "OTEL_SERVICE_NAME": "bench"}


class Receiver:
    """The OTLP receiver process (see ``harness/receiver.py``)."""

    def __init__(self, env: dict[str, str]) -> None:
        """Start it and read its endpoints (OTLP/HTTP, then gRPC)."""
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.receiver"], cwd=BENCH,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        self.endpoint = self.proc.stdout.readline().strip()
        self.grpc_endpoint = self.proc.stdout.readline().strip()
        if not (self.endpoint.startswith("http") and self.grpc_endpoint.startswith("http")):
            raise SystemExit("bench: the OTLP receiver did not start")

    def count(self) -> int:
        """Spans received so far."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        """Stop it (closing stdin ends its loop)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def base_env() -> dict[str, str]:
    """The environment of every run: ours without tracer settings, plus the bench on the path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "FLOWTRACE_OTEL", "PYTHONPATH", "TRACEPARENT"))}
    env["PYTHONPATH"] = str(BENCH)
    env["PYTHONHASHSEED"] = "0"  # same dict and set layouts in every run
    return env


def run_one(spec: dict[str, Any], env: dict[str, str], receiver: Receiver) -> dict[str, Any]:
    """One worker process; adds the spans the receiver got from it."""
    before = receiver.count() if spec["mode"] in EXPORTING else 0
    command = [sys.executable, "-m", "harness.worker", json.dumps(spec)]
    if spec["mode"] in APP_MODES and INSTRUMENT_COMMAND.exists():
        command = [str(INSTRUMENT_COMMAND), *command]
    proc = subprocess.run(command, cwd=BENCH, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        sys.stderr.write(f"bench: {spec['workload']}/{spec['mode']} failed:\n{proc.stderr}\n")
        return {**spec, "failed": True}
    result: dict[str, Any] = {**spec, **json.loads(proc.stdout.strip().splitlines()[-1])}
    if spec["mode"] in EXPORTING:
        result["spans"] = receiver.count() - before
    return result


def mode_env(mode: str, env: dict[str, str], receiver: Receiver) -> dict[str, str]:
    """Environment for one mode: the bridge reads the standard OTEL_* variables."""
    env = dict(env)
    endpoint = receiver.endpoint
    if mode in APP_MODES:
        env.update(APP_ENV, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint)
    if mode.startswith("otel"):
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_SERVICE_NAME="bench")
    if mode == "otel-sampled":
        env.update(SAMPLED_ENV)
    if mode == "otel-off":
        env.update(OTEL_TRACES_SAMPLER="always_off")
    if mode == "otel-lean":
        env.update(LEAN_ENV)
    if mode == "otel-stock":
        env.update(FLOWTRACE_OTEL_FAST_EXPORT="0")
    if mode == "otel-none":
        env.update(OTEL_TRACES_EXPORTER="none")
    if mode == "otel-onthread":  # spans built at each call's end, as before issue 13 item 8
        env.update(FLOWTRACE_OTEL_BUILD_ON_WORKER="0")
    if mode == "core-python":
        env.update(FLOWTRACE_OTEL_CORE="python")
    return env


def workload_modes(workload: str) -> tuple[str, ...]:
    """The modes run on ``workload`` when ``--modes`` is not given."""
    return MODES + APP_MODES if workload in APP_WORKLOADS else MODES


def scaled(units: int, quick: bool) -> int:
    """Fewer units in a quick run."""
    return max(1, units // 20) if quick else units


def measure(args: argparse.Namespace, receiver: Receiver) -> dict[str, Any]:
    """Every run of the benchmark; returns the raw results."""
    env = base_env()
    load_at_start = os.getloadavg()[0]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for workload in args.workloads:
        table = UNITS[workload]
        modes = args.modes or workload_modes(workload)
        runs[workload] = {mode: [] for mode in modes}
        repeats = args.repeats * (1 if args.quick else REPEAT_FACTOR.get(workload, 1))
        for repeat in range(repeats):
            for mode in modes:
                units = scaled(table.get(mode, table["default"]), args.quick)
                spec = {"workload": workload, "mode": mode, "units": units,
                        "endpoint": receiver.endpoint}
                if args.quick and (workload, mode) in QUICK_NO_WARMUP:
                    spec["warmup"] = 0
                result = run_one(spec, mode_env(mode, env, receiver), receiver)
                runs[workload][mode].append(result)
                progress(f"{workload:8} {mode:13} #{repeat + 1}", result)
    memory: dict[str, Any] = {}
    steps = (100_000 if args.quick else args.long_calls) // 2
    for mode in ("plain", "otel"):
        spec = {"workload": "longrun", "mode": mode, "units": 1, "steps": steps,
                "endpoint": receiver.endpoint}
        memory[mode] = run_one(spec, mode_env(mode, env, receiver), receiver)
        progress(f"longrun  {mode:13}", memory[mode])
    for workload, units in (("fib", 1 if args.quick else 5),
                            ("request", 50 if args.quick else 1000)):
        spec = {"workload": workload, "mode": "core-mem", "units": units, "warmup": 0}
        memory[f"session-{workload}"] = run_one(spec, env, receiver)
    ladder = subprocess.run([sys.executable, str(BENCH / "ladder.py"),
                             *(["--quick"] if args.quick else [])],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    memory["ladder"] = ladder.stdout if ladder.returncode == 0 else ""
    if ladder.returncode != 0:
        memory["ladder_failed"] = {"failed": True}
        sys.stderr.write(f"bench: ladder.py failed:\n{ladder.stderr}\n")
    return {"runs": runs, "memory": memory, "python": sys.version.split()[0],
            "quick": args.quick, "repeats": args.repeats, "commit": commit(),
            "load": [load_at_start, os.getloadavg()[0]], "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def commit() -> str:
    """The commit measured, marked ``+dirty`` when the package has uncommitted changes."""
    root = BENCH.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "flowtrace_otel"], cwd=root,
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def progress(label: str, result: dict[str, Any]) -> None:
    """One line on stderr per run, so a long run shows it is alive."""
    if result.get("failed"):
        text = "FAILED"
    elif "wall" in result:
        text = f"{result['wall']:.3f} s"
    else:
        text = "done"
    print(f"  {label}: {text}", file=sys.stderr, flush=True)


# --- analysis -------------------------------------------------------------------------------
def per_unit(result: dict[str, Any], key: str) -> float:
    """Seconds per unit of work."""
    return float(result[key]) / result["units"]


def median_of(results: list[dict[str, Any]], key: str) -> float | None:
    """Median per-unit value over the repeats that did not fail."""
    values = [per_unit(r, key) for r in results if not r.get("failed")]
    return statistics.median(values) if values else None


def paired(runs: dict[str, list[dict[str, Any]]], a: str, b: str, key: str = "cpu",
           minus: str | None = None) -> float | None:
    """Median over repeats of a/b, or of (a - minus)/(b - minus) when ``minus`` is given."""
    ratios = []
    for i in range(min(len(runs.get(a, [])), len(runs.get(b, [])))):
        ra, rb = runs[a][i], runs[b][i]
        rm = runs[minus][i] if minus else None
        if ra.get("failed") or rb.get("failed") or (rm is not None and rm.get("failed")):
            continue
        va, vb = per_unit(ra, key), per_unit(rb, key)
        if rm is not None:
            va, vb = va - per_unit(rm, key), vb - per_unit(rm, key)
        if vb > 0:
            ratios.append(va / vb)
    return statistics.median(ratios) if ratios else None


#: user calls per unit when the core mode (which counts them) is not in the run
CALLS = {"fib": fib.calls(fib.N), "request": 60, "stdlib": 3, "fanout": 152}


def calls_per_unit(runs: dict[str, list[dict[str, Any]]], workload: str = "") -> float | None:
    """User calls per unit, as counted by the core session (else the known count)."""
    for result in runs.get("core", []):
        if "events" in result:
            return float(result["events"]) / (result["units"] + result["warmup"])
    for results in runs.values():
        for result in results:
            return CALLS.get(result["workload"])
    return CALLS.get(workload)


def spans_per_unit(results: list[dict[str, Any]]) -> float | None:
    """Spans received per unit (warm-up units export too)."""
    values = [r["spans"] / (r["units"] + r["warmup"]) for r in results if "spans" in r]
    return statistics.median(values) if values else None


def fmt_time(seconds: float | None) -> str:
    """A duration with a readable unit."""
    if seconds is None:
        return "failed"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    """A number, or a dash when it could not be measured."""
    return "–" if value is None else f"{value:{spec}}{suffix}"


def workload_table(name: str, runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The markdown table of one workload."""
    calls = calls_per_unit(runs)
    plain = median_of(runs.get("plain", []), "cpu")
    counted = f" ({calls:.0f} user calls per unit)" if calls else ""
    lines = [f"**{name}** — {WHAT[name]}{counted}", "",
             "| mode | wall/unit | CPU/unit | × plain (CPU) | × plain (wall) | CPU overhead/call "
             "| ÷ floor overhead | spans/unit | CPU/span |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode, results in runs.items():
        wall, cpu = median_of(results, "wall"), median_of(results, "cpu")
        per_call = None
        if cpu is not None and plain is not None and calls and mode != "plain":
            per_call = (cpu - plain) / calls * 1e9
        spans = spans_per_unit(results)
        cpu_span = None
        cpu_plain = median_of(runs.get("plain", []), "cpu")
        if spans and cpu is not None and cpu_plain is not None:
            cpu_span = (cpu - cpu_plain) / spans * 1e6
        floor_ratio = (paired(runs, mode, "floor", minus="plain")
                       if mode not in ("plain", "floor") and "floor" in runs else None)
        lines.append(
            f"| {mode} | {fmt_time(wall)} | {fmt_time(cpu)} | {fmt(paired(runs, mode, 'plain'))}"
            f" | {fmt(paired(runs, mode, 'plain', key='wall'))}"
            f" | {fmt(per_call, ',.0f', ' ns')} | {fmt(floor_ratio, '.1f')}"
            f" | {fmt(spans, '.1f')} | {fmt(cpu_span, '.1f', ' µs')} |")
    return lines


def cpu_per_span(runs: dict[str, list[dict[str, Any]]], mode: str) -> float | None:
    """Extra CPU per exported span of ``mode`` over plain, medians."""
    cpu, plain = median_of(runs.get(mode, []), "cpu"), median_of(runs.get("plain", []), "cpu")
    spans = spans_per_unit(runs.get(mode, []))
    if cpu is None or plain is None or not spans:
        return None
    return (cpu - plain) / spans


@dataclass(frozen=True)
class Target:
    """One row of issue 13's targets: the issue's figure, how this run measures it, the bounds."""

    figure: str
    how: str
    value: float | None
    limit: float
    aim: float | None
    unit: str = "×"
    #: why a value shown is not the target's figure (e.g. a shorter long run), else ""
    partial: str = ""
    #: what a run needs to measure it, shown when it was not measured
    needs: str = ""

    def verdict(self) -> str:
        """met, MISSED, or not measured in this run."""
        if self.value is None or self.partial:
            return "not measured in this run"
        return "met" if self.value <= self.limit else "MISSED"


def bound(value: float | None, unit: str) -> str:
    """A limit or aim as the issue writes it: ``≤ 4 ×``, ``≤ 1/20``, ``≤ 20 MB``, or a dash."""
    if value is None:
        return "—"
    if unit == "×" and value < 1 and abs(1 / value - round(1 / value)) < 1e-9:
        return f"≤ 1/{1 / value:.0f}"
    return f"≤ {value:g} {unit}"


def shown(target: Target) -> str:
    """The measured value with its unit (a fraction also as 1/n)."""
    value = target.value
    if value is None:
        return "–"
    if target.unit == "MB":
        return f"+{value:.1f} MB"
    if value < 1 and target.limit < 1 and value > 0:
        return f"{value:.3f} × (1/{1 / value:.1f})"
    return f"{value:.2f} ×"


def app_launcher(req: dict[str, list[dict[str, Any]]]) -> str:
    """Who set up the app's provider in the app modes (``opentelemetry-instrument``/harness)."""
    for result in req.get("app", []) + req.get("app-peer", []):
        if "provider_by" in result:
            if result["provider_by"] == "opentelemetry-instrument":
                return "under the real `opentelemetry-instrument` command"
            return "provider set up by the harness as `opentelemetry-instrument` does"
    return "`opentelemetry-instrument`'s set-up"


def long_run_growth(memory: dict[str, Any]) -> tuple[float | None, int | None, str]:
    """RSS growth (MB, peak over before), calls and how long the traced long run took."""
    long_run = memory.get("otel", {})
    if "rss_peak" not in long_run:
        return None, None, ""
    growth = (long_run["rss_peak"] - long_run["rss_before"]) / 2**20
    took = f"{long_run['wall']:.0f} s wall, {long_run['cpu']:.0f} s CPU"
    return growth, 1 + 2 * long_run["steps"], took


def targets(data: dict[str, Any]) -> list[Target]:
    """Issue 13's eight targets, each measured from this run's figures (None: not run)."""
    runs, memory = data["runs"], data["memory"]
    fib_runs, req = runs.get("fib", {}), runs.get("request", {})
    ours, peer = cpu_per_span(req, "otel"), cpu_per_span(req, "peer")
    growth, calls, took = long_run_growth(memory)
    partial = ""
    if calls is not None and calls < LONG_RUN_CALLS:
        partial = f"{calls:,} calls only"
    return [
        Target(f"traced fib({fib.N}) overhead ÷ no-op Python-callback floor overhead",
               "`core-lean` (a TraceSession recording every call, no argument or result "
               "capture) ÷ `floor`, CPU over `plain`",
               paired(fib_runs, "core-lean", "floor", minus="plain"), 4.0, 0.8,
               needs="fib: plain, floor, core-lean"),
        Target("the same with every call's arguments and result captured (a TraceSession)",
               "`core` ÷ `floor`, CPU over `plain`",
               paired(fib_runs, "core", "floor", minus="plain"), 8.0, 3.0,
               needs="fib: plain, floor, core"),
        Target("stdlib-heavy workload traced ÷ plain",
               "`otel` ÷ `plain`, CPU", paired(runs.get("stdlib", {}), "otel", "plain"),
               1.10, 1.03, needs="stdlib: plain, otel"),
        Target("request workload overhead ÷ hand-written OTel spans' overhead, our own provider",
               "`otel` ÷ `peer`, CPU over `plain` (OTLP/HTTP)",
               paired(req, "otel", "peer", minus="plain"), 1 / 5, 1 / 20,
               needs="request: plain, otel, peer"),
        Target("the same under `opentelemetry-instrument` (the app's provider, gRPC)",
               f"`app` ÷ `app-peer`, CPU over `plain` ({app_launcher(req)})",
               paired(req, "app", "app-peer", minus="plain"), 1 / 5, 1 / 10,
               needs="request: plain, app, app-peer"),
        Target("request workload with 10% head sampling, traced ÷ plain",
               "`otel-sampled` (`traceidratio` 0.1) ÷ `plain`, CPU",
               paired(req, "otel-sampled", "plain"), 2.0, 1.25,
               needs="request: plain, otel-sampled"),
        Target("CPU per exported span ÷ stock SDK + OTLP path",
               "request: `otel` ÷ `peer`, extra CPU per span the receiver got",
               ours / peer if ours and peer else None, 1 / 4, 1 / 8,
               needs="request: plain, otel, peer"),
        Target(f"RSS growth over {LONG_RUN_CALLS // 1_000_000}M traced calls",
               "long run under `otel` in one trace, peak RSS − RSS before"
               + (f" ({calls:,} calls in {took})" if calls else ""),
               growth, 20.0, None, unit="MB", partial=partial,
               needs=f"the default `--long-calls {LONG_RUN_CALLS}`, not `--quick`"),
    ]


def targets_table(data: dict[str, Any]) -> list[str]:
    """Issue 13's targets as a markdown table."""
    lines = ["**Targets (issue 13)** (ratios from this run, medians of per-repeat ratios)", "",
             "| figure | measured as | measured | must reach | aim | verdict |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for target in targets(data):
        verdict = target.verdict()
        if target.partial:
            verdict += f" ({target.partial}; needs {target.needs})"
        elif target.value is None:
            verdict += f" (needs {target.needs})"
        lines.append(f"| {target.figure} | {target.how} | {shown(target)} "
                     f"| {bound(target.limit, target.unit)} | {bound(target.aim, target.unit)} "
                     f"| {verdict} |")
    return lines


def overhead_per_call(runs: dict[str, list[dict[str, Any]]], mode: str) -> float | None:
    """Extra CPU ns per user call of ``mode`` over plain (medians)."""
    calls = calls_per_unit(runs)
    cpu, plain = median_of(runs.get(mode, []), "cpu"), median_of(runs.get("plain", []), "cpu")
    if cpu is None or plain is None or not calls:
        return None
    return (cpu - plain) / calls * 1e9


def overhead_model(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """What a call costs, by what happens to it."""
    fib_runs, req = runs.get("fib", {}), runs.get("request", {})
    stdlib = paired(runs.get("stdlib", {}), "otel", "plain")
    fib_spans = spans_per_unit(fib_runs.get("otel", []))
    fib_calls = calls_per_unit(fib_runs)
    share = f"{fib_spans:.0f} of {fib_calls:.0f} calls exported" if fib_spans and fib_calls else ""
    ours, peer = cpu_per_span(req, "otel"), cpu_per_span(req, "peer")
    rows = [
        ("library code (stdlib, site-packages): DISABLEd after its first call",
         f"stdlib-heavy under otel: {fmt(stdlib)} × plain"),
        ("the floor: two no-op sys.monitoring callbacks",
         f"{fmt(overhead_per_call(fib_runs, 'floor'), ',.0f')} ns (fib)"),
        ("recorded in memory by the core session",
         f"{fmt(overhead_per_call(fib_runs, 'core'), ',.0f')} ns (fib), "
         f"{fmt(overhead_per_call(req, 'core'), ',.0f')} ns (request)"),
        ("traced by the bridge, mostly folded or dropped by the span budget",
         f"{fmt(overhead_per_call(fib_runs, 'otel'), ',.0f')} ns (fib, {share})"),
        ("in a trace the sampler dropped (`always_off`: every trace)",
         f"{fmt(overhead_per_call(fib_runs, 'otel-off'), ',.0f')} ns (fib), "
         f"{fmt(overhead_per_call(req, 'otel-off'), ',.0f')} ns (request)"),
        ("traced with `traceidratio` 0.1 (1 trace in 10 exported)",
         f"{fmt(overhead_per_call(req, 'otel-sampled'), ',.0f')} ns (request)"),
        ("exported as a span by the bridge (everything included)",
         f"{fmt(None if ours is None else ours * 1e9, ',.0f')} ns per span (request)"),
        ("exported as a span by hand-written OTel code (the peer)",
         f"{fmt(None if peer is None else peer * 1e9, ',.0f')} ns per span (request)"),
    ]
    return ["| a user call that is ... | costs |", "| --- | ---: |",
            *(f"| {what} | {cost} |" for what, cost in rows)]


def report(data: dict[str, Any]) -> str:
    """The whole report as markdown."""
    load = "/".join(f"{x:.1f}" for x in data["load"])
    extra = "".join(f" ({name}: {data['repeats'] * factor})"
                    for name, factor in REPEAT_FACTOR.items() if not data["quick"])
    lines = [f"Python {data['python']}, commit {data['commit']}, {data['repeats']} interleaved "
             f"repeat(s){extra}, medians; {data['date']}; {data['cpus']} CPUs, load average {load} "
             "(start/end)" + (" — QUICK smoke run, figures are noise" if data["quick"] else ""),
             ""]
    for name, runs in data["runs"].items():
        lines += workload_table(name, runs)
        lines.append("")
    lines += targets_table(data)
    lines += ["", "**Overhead model** (extra CPU per user call, from the tables above)", ""]
    lines += overhead_model(data["runs"])
    if data["memory"].get("ladder"):
        lines += ["", "**Where the time goes** (`bench/ladder.py`: callbacks on fib(20), one "
                  "ingredient at a time)", "", data["memory"]["ladder"].rstrip()]
    lines += ["", "**Memory**", ""]
    memory = data["memory"]
    for mode in ("plain", "otel"):
        result = memory.get(mode, {})
        if "rss_peak" in result:
            calls = 1 + 2 * result["steps"]
            before, peak = result["rss_before"] / 2**20, result["rss_peak"] / 2**20
            lines.append(
                f"- long run, {mode}: {calls:,} calls in {result['wall']:.1f} s, RSS "
                f"{before:.1f} MB before, peak {peak:.1f} MB (+{peak - before:.1f} MB)"
                + (f", {result['spans']} spans exported" if "spans" in result else ""))
    for workload in ("fib", "request"):
        result = memory.get(f"session-{workload}", {})
        events = result.get("events")
        if events:
            lines.append(
                f"- in-memory session, {workload}: {result['recorded_bytes'] / events:.0f}"
                f" bytes per call while recording, {result['event_bytes'] / events:.0f}"
                f" bytes per CallEvent after stop() ({events:,} calls, tracemalloc)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run, print the report, optionally save the raw results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (noisy figures)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (5)")
    parser.add_argument("--workloads", nargs="+", default=list(UNITS), choices=list(UNITS))
    parser.add_argument("--modes", nargs="+", default=None,
                        choices=[*MODES, *APP_MODES, *EXTRA_MODES],
                        help="modes of every workload (default: all but the extra ones; "
                             "app and app-peer on the request workload only)")
    parser.add_argument("--long-calls", type=int, default=LONG_RUN_CALLS,
                        help="calls in the memory run (10 million)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    receiver = Receiver(base_env())
    try:
        data = measure(args, receiver)
    finally:
        receiver.close()
    text = report(data)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    failed = any(r.get("failed") for runs in data["runs"].values()
                 for results in runs.values() for r in results)
    failed = failed or any(isinstance(r, dict) and r.get("failed")
                           for r in data["memory"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
