"""Real libraries' own test suites pass identically with FLOWTRACE_OTEL=1 (issue 7.7).

Runs ``.ci/real_suites.py`` (six and toolz from their PyPI sdists, run from the unpacked source
so that their code is user code) and checks its report: the same outcome for every test id
plainly and traced, and spans of the libraries' own functions received by a live receiver.
The sdists are cached in ``.ci/.cache/real_suites`` after the first download, which needs the
network: the test is marked ``slow`` and runs in ``./dev test``'s second step (CI), not in the
quick ``-m "not slow"`` runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "real_suites.py"


@pytest.mark.slow
def test_real_suites_pass_identically_traced(tmp_path: Path) -> None:
    """Every test of six and toolz ends the same way traced; their functions become spans."""
    report_file = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json", str(report_file)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    reports = {r["library"].split("==")[0]: r for r in json.loads(report_file.read_text())}
    assert set(reports) == {"six", "toolz"}
    for name, report in reports.items():
        assert report["ok"], report
        assert report["differing"] == [], report
        assert report["tests"] > 150, report
        assert report["outcomes"]["passed"] > 150, report
        assert report["exit_codes"][0] == report["exit_codes"][1] == 0, report
        assert report["library_spans"] > 100, report
    assert {"add_metaclass", "with_metaclass"} <= set(reports["six"]["library_functions"])
    assert {"groupby", "merge", "pipe", "compose", "curry.__call__"} <= set(
        reports["toolz"]["library_functions"])
