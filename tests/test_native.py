"""The C building block flowtrace_otel._native, each behaviour in its own process.

The scenarios live in tests/native/exercise.py (the memory check runs the same ones under
valgrind).  When the extension is not built, these tests fail, unless the run says it is
pure-Python on purpose with FLOWTRACE_OTEL_CORE=python (e.g. the CC=/bin/false run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowtrace_otel.core import CORE_ENV, choose_core

EXERCISE = Path(__file__).parent / "native" / "exercise.py"
NATIVE_BUILT = choose_core({}).native is not None

if not NATIVE_BUILT and os.environ.get(CORE_ENV) == "python":
    pytest.skip(f"the C core is not built and {CORE_ENV}=python", allow_module_level=True)


def scenario(name: str) -> dict[str, object]:
    """Run one scenario in a fresh interpreter; its JSON report."""
    done = subprocess.run([sys.executable, str(EXERCISE), name], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_c_core_is_built() -> None:
    assert NATIVE_BUILT, choose_core({}).native_error


def test_calls_are_counted_and_the_predicate_is_asked_once_per_code_object() -> None:
    seen = scenario("counts")
    assert seen["fib"] == 1973  # fib(15) makes 1973 calls
    assert seen["asked_fib"] == 1 and seen["asked_helper"] == 1  # 100 calls, asked once
    assert seen["helper"] == 0  # unwanted: never recorded
    assert isinstance(seen["fib_ns"], int) and seen["fib_ns"] > 0
    assert seen["internal_errors"] == 0 and seen["unmatched_returns"] == 0


def test_each_thread_has_a_stack_and_an_ended_thread_frees_it() -> None:
    seen = scenario("threads")
    assert seen["threads_running"] == 5  # main + 4 workers
    assert seen["threads_after_join"] == 1
    assert seen["fib"] == 4 * 465  # fib(12) makes 465 calls, in each thread


def test_a_code_object_that_dies_leaves_the_stats() -> None:
    # its row leaves, and its slot is freed (the co_extra free function ran)
    assert scenario("code_freed") == {"before": 1, "after": 0, "slots_freed": 1}


def test_two_threads_deciding_at_once_share_one_slot() -> None:
    # before the fix the second thread replaced the first one's slot: only 1 call was counted
    assert scenario("racing_decision") == {"calls": 2, "rows": 1, "rows_after_death": 0}


def test_calls_that_raise_do_not_break_the_stack() -> None:
    seen = scenario("unwind")
    assert seen["outer"] == 1 and seen["boom"] == 0  # boom only ever raised
    assert seen["unmatched_returns"] == 0


def test_a_failing_predicate_is_counted_and_the_program_goes_on() -> None:
    seen = scenario("predicate_error")
    assert seen["result"] == 55 and seen["fib"] == 0 and seen["predicate_errors"] == 1


def test_a_keyboard_interrupt_in_the_predicate_reaches_the_program() -> None:
    assert scenario("interrupt") == {"interrupt_reached_program": "yes"}


def test_start_after_stop_decides_again_and_frees_the_tool() -> None:
    # fib(5) makes 15 calls; fib(6) 25: the second run forgets the first's counts
    assert scenario("restart") == {"first": 15, "second": 25, "tool_free": None}


def test_a_taken_tool_id_is_a_value_error_and_nothing_starts() -> None:
    assert scenario("tool_taken") == {"error": "tool 4 is already in use", "active": False}


def test_a_forked_child_goes_on_counting_and_stops_cleanly() -> None:
    seen = scenario("fork")
    assert seen == {"parent": 15, "child_exit": 0, "child": 30, "threads": 1}


def test_left_running_at_exit_with_a_daemon_thread_inside_a_call() -> None:
    assert scenario("exit_running") == {"exiting": True}


def test_the_c_capture_renders_the_reference_text_and_keeps_reference_counts() -> None:
    seen = scenario("capture")
    assert seen["mismatches"] == [] and seen["refcounts_changed"] == []
    # a container emptied while our own Python code ran: the dict's walk stops with the
    # RuntimeError of a Python dict iterator; a list is re-measured and simply ends
    assert seen["mutated_dict"] == "RuntimeError: dictionary changed size during iteration"
    assert seen["mutated_list"] == "[{'k0': [0]}]"
    assert seen["cycle_freed"] is True
