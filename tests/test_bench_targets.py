"""Issue 13's targets table of ``bench/run.py``, from made-up results (no process is timed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "bench"
_SPEC = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
assert _SPEC is not None and _SPEC.loader is not None
bench_run = importlib.util.module_from_spec(_SPEC)
sys.modules["bench_run"] = bench_run  # dataclasses look their module up
_SPEC.loader.exec_module(bench_run)


def result(cpu: float, units: int = 1, **extra: Any) -> dict[str, Any]:
    """One repeat of one mode: ``cpu`` seconds for ``units`` units."""
    return {"cpu": cpu, "wall": cpu, "units": units, "warmup": 0, **extra}


def data(long_steps: int = 5_000_000, app: bool = True) -> dict[str, Any]:
    """A run where only the app-provider row and the memory row can reach their limits."""
    fib = {"plain": [result(1.0)], "floor": [result(2.0)], "core-lean": [result(11.0)],
           "core": [result(21.0)]}
    request = {"plain": [result(1.0)], "otel": [result(4.0, spans=10)],
               "peer": [result(11.0, spans=10)], "otel-sampled": [result(3.0)]}
    if app:
        request |= {"app": [result(2.0)], "app-peer": [result(21.0)]}
    return {"runs": {"fib": fib, "request": request,
                     "stdlib": {"plain": [result(1.0)], "otel": [result(1.2)]}},
            "memory": {"otel": {"rss_before": 0, "rss_peak": 2**20, "steps": long_steps,
                                "wall": 10.0, "cpu": 9.0}}}


def test_each_target_is_measured_from_its_modes() -> None:
    targets = bench_run.targets(data())
    assert [round(t.value, 3) for t in targets] == [10.0, 20.0, 1.2, 0.3, 0.05, 3.0, 0.3, 1.0]
    assert [t.verdict() for t in targets] == ["MISSED"] * 4 + ["met"] + ["MISSED"] * 2 + ["met"]


def test_a_missing_mode_or_a_short_long_run_is_not_measured() -> None:
    rows = bench_run.targets_table(data(long_steps=50_000, app=False))
    assert "| not measured in this run (needs request: plain, app, app-peer) |" in rows[8]
    assert "| +1.0 MB |" in rows[11] and "not measured in this run (100,001 calls only" in rows[11]
    assert "| ≤ 1/5 | ≤ 1/10 |" in rows[8] and "| ≤ 20 MB | — |" in rows[11]
