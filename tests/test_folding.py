"""Big runs stay bounded and readable: folding while recording and when printing, cuts marked.

The rule (flowtrace_otel/folding.py): under one parent, the first N calls of each function are
kept, calls that raised are always kept, the rest fold (with everything inside them) into one
aggregate per (parent, function). Nothing is lost: every call is counted somewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from _programs import clean_env
from conftest import masked

from flowtrace_otel import TraceSession
from flowtrace_otel.events import CallEvent
from flowtrace_otel.formatters import format_tree


def tiny(i: int) -> int:
    return i + 1


def helper(i: int) -> int:
    return i * 2


def work(i: int) -> int:
    if i % 1000 == 999:
        raise ValueError(f"bad {i}")
    return helper(i) + helper(i + 1)


def loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += tiny(i)
    return total


def careful(n: int) -> int:
    total = 0
    for i in range(n):
        try:
            total += work(i)
        except ValueError:
            pass
    return total


def fib(n: int) -> int:
    return n if n <= 1 else fib(n - 1) + fib(n - 2)


def accounted(events: list[CallEvent]) -> int:
    """Calls the events stand for: each kept call once, each fold for all it folded."""
    return sum(event.calls for event in events)


def folds(events: list[CallEvent]) -> list[CallEvent]:
    return [event for event in events if event.fold is not None]


def test_session_folds_repeated_siblings_while_recording() -> None:
    with TraceSession(record_fold_after=100) as session:
        loop(3000)
    events = session.events
    assert [e.func_name for e in events[:3]] == ["loop", "tiny", "tiny"]
    assert len(events) == 1 + 100 + 1  # loop, 100 tiny kept, one aggregate
    (fold,) = folds(events)
    assert fold.status == "folded" and fold.func_name == "tiny" and fold.args_repr == "…"
    assert fold.parent_id == events[0].id
    assert fold.fold is not None and fold.fold.count == 2900 and fold.fold.inside == 0
    assert 0 <= fold.fold.min_ns <= fold.fold.max_ns <= fold.fold.total_ns
    assert fold.end_ns <= events[0].end_ns
    assert accounted(events) == 3001


def test_folded_calls_take_what_ran_inside_them_and_raised_calls_stay() -> None:
    with TraceSession(record_fold_after=10) as session:
        careful(3000)
    events = session.events
    raised = [e for e in events if e.func_name == "work" and e.exc_type == "ValueError"]
    assert [e.args_repr for e in raised] == ["999", "1999", "2999"]  # past the 10: still kept
    assert all(e.exc_state == "caught" for e in raised)
    (fold,) = [e for e in folds(events) if e.func_name == "work"]
    assert fold.fold is not None
    assert (fold.fold.count, fold.fold.inside) == (3000 - 10 - 3, 2 * (3000 - 10 - 3))
    assert accounted(events) == 1 + 3000 + 2 * 2997  # careful, work, helper (not after raising)


def test_max_events_bounds_a_tree_with_no_repeated_siblings() -> None:
    with TraceSession(max_events=50) as session:
        assert fib(15) == 610
    events = session.events
    kept = [e for e in events if e.fold is None]
    assert len(kept) <= 50 + 15  # the budget, and the calls above kept ones (15 deep)
    assert folds(events)
    assert accounted(events) == 1973  # fib(15) makes 1973 calls: all counted


def test_limits_can_be_turned_off() -> None:
    with TraceSession(record_fold_after=0, max_events=0) as session:
        loop(2000)
    assert len(session.events) == 2001 and not folds(session.events)


def test_print_folds_after_fold_after_and_says_what_the_line_stands_for() -> None:
    with TraceSession() as session:
        loop(50)
    lines = masked(format_tree(session.events)).splitlines()
    assert lines[1:6] == [f"  → tiny({i}) [..s]" for i in range(5)]
    assert lines[6].startswith("  → tiny(…) ×45 folded [total ")
    assert ", min " in lines[6] and ", max " in lines[6]
    assert len(lines) == 8
    assert len(format_tree(session.events, fold_after=0).splitlines()) == 52


def test_print_merges_the_sessions_fold_with_its_own() -> None:
    with TraceSession(record_fold_after=20) as session:
        loop(100)
    lines = format_tree(session.events, show_timing=False).splitlines()
    assert lines == ["→ loop(100)", *[f"  → tiny({i})" for i in range(5)],
                     "  → tiny(…) ×95 folded", "← loop(100)"]


def test_print_keeps_raised_calls_and_counts_what_is_inside_folds() -> None:
    with TraceSession() as session:
        careful(2000)
    lines = format_tree(session.events, show_timing=False).splitlines()
    assert "  → work(…) ×1,993 folded (+3,986 calls inside)" in lines
    assert [line for line in lines if "raised" in line] == [
        "  → work(999) raised ValueError: bad 999 [caught]",
        "  → work(1999) raised ValueError: bad 1999 [caught]",
    ]


def nested(n: int) -> int:
    return sum(middle(i) for i in range(n))


def middle(i: int) -> int:
    return sum(leaf(j) for j in range(3)) + i


def leaf(j: int) -> int:
    return j


def test_every_cut_is_marked_where_it_is() -> None:
    with TraceSession() as session:
        nested(4)
        leaf(1)
        leaf(2)
    text = format_tree(session.events, show_timing=False, max_lines=4)
    assert text.splitlines() == [
        "→ nested(4)",
        "  → middle(0)",
        "    → leaf(0)",
        "    → leaf(1)",
        "    … 1 more call not shown (max_lines): leaf() ×1",
        "  ← middle(0)",
        "  … 12 more calls not shown (max_lines): middle() ×3 and 9 calls inside",
        "← nested(4)",
        "… 2 more calls not shown (max_lines): leaf() ×2",
    ]


def test_no_marker_when_nothing_is_cut() -> None:
    with TraceSession() as session:
        nested(2)
    text = format_tree(session.events, max_lines=10)  # the last two lines close calls
    assert "not shown" not in text and len(text.splitlines()) == 9 + 3  # calls, closings
    assert "not shown" in format_tree(session.events, max_lines=9)


IMPORTED = '''
def register(name):
    return name.upper()

NAMES = [register(f"plugin{i}") for i in range(40)]
'''

MAIN = '''
import plugins

def main():
    return len(plugins.NAMES)

main()
'''


def test_import_time_calls_are_one_folded_group(tmp_path: Path) -> None:
    (tmp_path / "plugins.py").write_text(textwrap.dedent(IMPORTED))
    (tmp_path / "app.py").write_text(textwrap.dedent(MAIN))
    done = subprocess.run([sys.executable, "-m", "flowtrace_otel", "run", "app.py"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          check=False, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("… 40 calls made while importing modules, folded [total ")
    assert lines[1].startswith("→ main() [")
    assert "register" not in done.stderr


def test_import_time_calls_are_marked_and_can_be_shown(tmp_path: Path) -> None:
    (tmp_path / "plugins_marked.py").write_text(textwrap.dedent(IMPORTED))
    sys.path.insert(0, str(tmp_path))
    try:
        with TraceSession() as session:
            import plugins_marked  # noqa: F401 - the import is what is traced
            tiny(1)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("plugins_marked", None)
    events = session.events
    assert [e.import_time for e in events if e.func_name == "register"] == [True] * 40
    assert [e.import_time for e in events if e.func_name == "tiny"] == [False]
    shown = format_tree(events, show_timing=False, show_imports=True).splitlines()
    assert shown[:2] == ["→ register('plugin0')", "→ register('plugin1')"]
    assert "→ register(…) ×35 folded" in shown


def test_300000_calls_print_a_folded_tree_in_bounded_memory(tmp_path: Path) -> None:
    """The run of issue 14 (item 6): peak RSS of the whole process stays under 120 MB."""
    program = tmp_path / "many.py"
    program.write_text(textwrap.dedent('''
        import sys

        def tiny(i):
            return i + 1

        def main(n):
            total = 0
            for i in range(n):
                total += tiny(i)
            return total

        print(main(int(sys.argv[1])))
    '''))
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent('''
        import sys
        from flowtrace_otel.cli import main
        code = main(["run", sys.argv[1], "300000"])
        # VmHWM: this process image's own peak (ru_maxrss also counts the pages of the parent
        # that forked it: a long test run's 140 MB)
        with open("/proc/self/status") as status:
            peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        with open(sys.argv[2], "w") as out:
            out.write(f"{code} {peak_kb}")
    '''))
    report = tmp_path / "peak.txt"
    done = subprocess.run([sys.executable, str(driver), str(program), str(report)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False,
                          env=clean_env(NO_COLOR="1"))  # nothing inherited from other tests
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{sum(range(1, 300001))}\n"
    code, peak_kb = map(int, report.read_text().split())
    assert code == 0
    assert peak_kb < 120 * 1024, f"peak RSS {peak_kb / 1024:.1f} MB"
    lines = masked(done.stderr).splitlines()
    assert lines == ["→ main(300000)", *[f"  → tiny({i}) [..s]" for i in range(5)],
                     lines[6], "← main(300000) [..s]"]
    assert lines[6].startswith("  → tiny(…) ×299,995 folded [total ")
