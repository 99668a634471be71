"""The benchmark runs end to end (``bench/run.py --quick``); no timing is asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("plain", "floor", "core", "otel", "otel-sampled", "otel-off", "peer")
WORKLOADS = ("fib", "request", "stdlib", "fanout")


def test_quick_run_prints_every_workload_and_mode() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for workload in WORKLOADS:
        assert f"**{workload}**" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for mode in MODES:
        mode_rows = [row for row in rows if row.startswith(f"| {mode} |")]
        assert len(mode_rows) == len(WORKLOADS), (mode, out)
        assert not any("failed" in row for row in mode_rows), mode_rows
    assert "**Targets (issue 5)**" in out
    assert "long run, otel:" in out
    assert "bytes per call while recording" in out
