"""The benchmark runs end to end (``bench/run.py --quick``); no timing is asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("plain", "floor", "core-lean", "core", "otel", "otel-sampled", "otel-off", "peer")
#: the application's provider as opentelemetry-instrument sets it up: request workload only
APP_MODES = ("app", "app-peer")
WORKLOADS = ("fib", "request", "stdlib", "fanout")
#: issue 13's targets, in the issue's order (the start of each row's first cell)
TARGETS = ("traced fib(22) overhead", "the same with every call's arguments",
           "stdlib-heavy workload", "request workload overhead", "the same under `opentelemetry",
           "request workload with 10% head sampling", "CPU per exported span",
           "RSS growth over 10M traced calls")
VERDICTS = ("met", "MISSED", "not measured in this run")


def section(out: str, title: str) -> list[str]:
    """The table rows that follow the bold ``title`` line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 1:]:
        if rows and not line.startswith("|"):
            break
        if line.startswith("| ") and not line.startswith(("| figure", "| ---")):
            rows.append(line)
    return rows


def test_quick_run_prints_every_workload_mode_and_issue_13_target() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for workload in WORKLOADS:
        assert f"**{workload}**" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for mode in MODES + APP_MODES:
        mode_rows = [row for row in rows if row.startswith(f"| {mode} |")]
        assert len(mode_rows) == (1 if mode in APP_MODES else len(WORKLOADS)), (mode, out)
        assert not any("failed" in row for row in mode_rows), mode_rows
    targets = section(out, "**Targets (issue 13)**")
    assert [row[2:].startswith(start) for row, start in zip(targets, TARGETS, strict=True)] \
        == [True] * len(TARGETS), targets
    verdicts = [row.rstrip(" |").rsplit("| ", 1)[1] for row in targets]
    assert all(v.startswith(VERDICTS) for v in verdicts), verdicts
    # every ratio is measured by the default run; only the 10M-call row needs the long run
    assert [v.startswith("not measured") for v in verdicts] == [False] * 7 + [True], verdicts
    assert "under the real `opentelemetry-instrument` command" in targets[4], targets[4]
    assert "long run, otel:" in out
    assert "bytes per call while recording" in out
