"""A program's own use of the API is unchanged by an outer tracer (issue 12, item 2).

``flowtrace-otel run`` and ``FLOWTRACE_OTEL=1`` are outer tools: a program that traces itself
(``TraceSession`` with its own options, ``start_tracing``, ``active_tracing``, ``@trace``) must
print the same, exit the same and never meet ``TracingConflict`` because of them. Sessions with
different options run side by side on the two free tool ids, without restart_events().
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests._programs import PY, clean_env

SAMPLE = Path(__file__).parent / "samples" / "own_sessions.py"


def _run(mode: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run the sample in ``mode``: plain, env, cli (tree) or cli-otel."""
    shutil.copy(SAMPLE, folder / SAMPLE.name)
    env = clean_env()
    cmd = [PY, SAMPLE.name]
    if mode == "env":
        env.update(FLOWTRACE_OTEL="1", OTEL_TRACES_EXPORTER="none")
    elif mode == "cli":
        cmd = [PY, "-m", "flowtrace_otel", "run", SAMPLE.name]
    elif mode == "cli-otel":
        env["OTEL_TRACES_EXPORTER"] = "none"
        cmd = [PY, "-m", "flowtrace_otel", "run", "--otel", SAMPLE.name]
    return subprocess.run(cmd, env=env, cwd=folder, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("mode", ["env", "cli", "cli-otel"])
def test_a_program_tracing_itself_prints_the_same_under_an_outer_tracer(
        mode: str, tmp_path: Path) -> None:
    """Same stdout, same exit code, and the program's stderr (its @trace tree) comes first."""
    plain = _run("plain", tmp_path)
    assert plain.returncode == 3, plain.stderr
    assert "session names ['branch', 'leaf', 'leaf']" in plain.stdout
    assert "→ leaf('value-numb…)" in plain.stdout  # the session's own max_repr
    assert "← decorated(2) → ['VALUE-NUMBER-0', 'VALUE-NUMBER-1']" in plain.stderr
    traced = _run(mode, tmp_path)
    assert traced.stdout == plain.stdout, traced.stderr
    assert traced.returncode == 3
    assert "TracingConflict" not in traced.stderr
    if mode == "env":
        assert traced.stderr == plain.stderr
    else:  # the CLI adds its own report after the program's output
        assert traced.stderr.startswith(plain.stderr), traced.stderr


PROBE = """
    import sys
    from flowtrace_otel import TraceSession, TracingConflict
    from flowtrace_otel.session import registry

    calls = []
    sys.monitoring.restart_events = lambda: calls.append("restart_events")

    def leaf(text):
        return text.upper()

    with TraceSession() as wide, TraceSession(max_repr=8, capture_result=False) as narrow:
        tool_ids = sorted(r.monitor.tool_id for r in registry.running)
        leaf("abcdefghijklmnop")
        try:
            TraceSession(max_items=1).start().stop()
            third = "third started"
        except TracingConflict as error:
            third = "conflict: " + str(error)
    print(tool_ids, calls)
    print(wide.events[0].args_repr, wide.events[0].result_repr)
    print(narrow.events[0].args_repr, narrow.events[0].result_repr)
    print(third)
"""


def test_sessions_with_different_options_coexist_each_with_its_own_view(tmp_path: Path) -> None:
    """Two option sets, two tool ids, one view each; no restart_events; a third is refused."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE))
    proc = subprocess.run([PY, str(script)], env=clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    ids, wide, narrow, third = proc.stdout.splitlines()
    assert ids == "[3, 4] []"
    assert wide == "'abcdefghijklmnop' 'ABCDEFGHIJKLMNOP'"
    assert narrow == "'abcdef… None"
    assert third.startswith("conflict: ") and "max_items" in third


def test_under_an_outer_tool_the_program_gets_the_same_two_views(tmp_path: Path) -> None:
    """FLOWTRACE_OTEL=1 holds an id: the program's two option sets behave as untraced."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE))
    plain = subprocess.run([PY, str(script)], env=clean_env(), capture_output=True, text=True,
                           timeout=60)
    env = clean_env(FLOWTRACE_OTEL="1", OTEL_TRACES_EXPORTER="none")
    traced = subprocess.run([PY, str(script)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout), traced.stderr


def test_a_second_option_set_shares_a_tool_with_other_options(tmp_path: Path) -> None:
    """The documented limit: a tool with options of its own holds the other id; no conflict."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE))
    proc = subprocess.run([PY, "-m", "flowtrace_otel", "run", "--max-repr", "50", str(script)],
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _ids, wide, narrow, third = proc.stdout.splitlines()
    assert wide == "'abcdefghijklmnop' 'ABCDEFGHIJKLMNOP'"
    assert narrow == "'abcdefghijklmnop' 'ABCDEFGHIJKLMNOP'"  # the tool's view
    assert third.startswith("conflict: ")  # as untraced: the program holds two sets
