"""The native core's C hot path (``_native.HotPath``, ``native_monitor.py``).

The behaviours every core must have are in tests/test_conformance.py, run per core; here: that
the common path really runs in C, that it makes the same records as the Python reference, and
the C-specific hazards (reference counts, thread exit, fork, stop during open calls), each
scenario in its own process (tests/native/exercise.py; the memory check runs them under
valgrind).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowtrace_otel import core
from flowtrace_otel.capture import Capturer
from flowtrace_otel.filters import CodeFilter
from flowtrace_otel.records import Record

if core.NATIVE not in core.recording_cores():
    pytest.skip("the C core is not built (tests/test_native.py fails for that)",
                allow_module_level=True)

EXERCISE = Path(__file__).parent / "native" / "exercise.py"


def scenario(name: str, **env: str) -> dict[str, Any]:
    """Run one scenario in a fresh interpreter; its JSON report."""
    done = subprocess.run([sys.executable, str(EXERCISE), name], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_records_made_in_c_are_whole_and_leave_no_reference_behind() -> None:
    seen = scenario("hot_calls")
    assert seen["records"] == 269 and seen["unique_ids"]
    assert seen["names"] == ["counting", "fib", "outer", "raises", "takes"]
    assert seen["secret"] == [["value", "0", "p"], ["password", "[REDACTED]", "p"],
                              ["rest", "(1, 2)", "*"], ["named", "{'key': 0}", "**"]]
    assert seen["raised"] == "raised"
    # every call but the 21 roots (on_root) and the 4 first calls of a function (the
    # decision) started in C; every return but the one that raised ended in C
    assert seen["stats"]["c_starts"] == 269 - 21 - 4
    assert seen["stats"]["c_returns"] == 269 - 1
    # an argument and result captured 20 times: their reference counts are back where they
    # were; once the consumer drops its records and the monitor is gone, no record and no
    # thread state is left (the thread's binding to the C path released its state)
    assert seen["probe_refs"] == 0
    assert seen["records_alive"] == 0 and seen["thread_states_alive"] == 0


def test_an_unrecorded_trace_pushes_ghosts_in_c_and_records_nothing() -> None:
    seen = scenario("hot_ghosts")
    assert seen["records"] == 0
    assert seen["stats"]["c_starts"] == 0
    assert seen["stats"]["c_ghosts"] == 2 * 248 - 4  # all but the roots and first calls
    assert seen["ghost_refs"] == 0  # every ghost pushed was popped and released


def test_threads_bound_to_the_c_path_end_and_free_their_state() -> None:
    seen = scenario("hot_threads")
    assert seen["threads"] == 4 and seen["roots"] == 4
    assert seen["stats"]["c_starts"] > 4 * 240  # each thread's calls after its first event
    assert seen["thread_states_alive"] == 0


def test_stop_inside_open_calls_ends_them_and_ignores_the_returns_after() -> None:
    # top + deep(5..0): seven open calls, ended once as unfinished; fib(5) after the stop is
    # not recorded, and the returns of the ended calls do not end them again
    assert scenario("hot_stop_open") == {"records": 7, "statuses": ["unfinished"],
                                         "unfinished": 7}


def test_consumers_that_retire_the_running_callbacks_do_not_crash_them() -> None:
    # set_consumers() or stop() inside on_root/on_end frees the HotPath whose callback runs
    # (sys.monitoring keeps no reference during the call); the debug allocator fills freed
    # memory, so touching it afterwards crashes (it did, under coverage's C tracer)
    seen = scenario("hot_replaced_inside", PYTHONMALLOC="debug")
    # outer() makes 249 calls; the stop at the 300th end leaves 8 calls open: ended unfinished
    assert seen == {"replaced": 5 * 249, "stopped": 308, "unfinished": 8}


def test_a_child_forked_inside_traced_calls_goes_on_recording_in_c() -> None:
    seen = scenario("hot_fork")
    assert seen["child"] == 0  # its 67 calls of fib(8) ended under its open parent
    assert seen["records"] == 1 + 25  # the parent: forks() and fib(6)


# --- the same records as the Python reference ---------------------------------------------------
class Sink:
    """A consumer keeping every finished record."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def on_root(self, record: Record) -> bool:
        return True

    def on_end(self, record: Record) -> None:
        self.records.append(record)


def leaf(x: object) -> object:
    return x


def secret_and_kinds(token: str, *items: int, flag: bool = False, **extra: str) -> int:
    return len(items) + int(flag)


def raises(n: int) -> int:
    if n:
        raise KeyError(n)
    return 0


def closure_arg(value: list[int]) -> int:
    def inner() -> int:
        return len(value)  # `value` is a cell: read from it at PY_START

    return inner()


def program() -> int:
    total = 0
    for i in range(30):
        leaf(i)
        leaf(f"s{i}")
        leaf([i, {"password": "x"}])
        total += secret_and_kinds("t0ken", 1, 2, flag=True, user="me")
        try:
            raises(i % 3)
        except KeyError:
            total += 1
        total += closure_arg([i])
    return total


def shape(rec: Record) -> tuple[object, ...]:
    """What a record says about its call, without times and ids."""
    parent = rec.parent.info.qualname if rec.parent is not None else None
    return (rec.info.qualname, parent, rec.args, rec.result, rec.status, rec.exc and rec.exc[:2],
            rec.exc_state, rec.caught, rec.recording, rec.root.info.qualname, rec.thread.ident,
            rec.ctx is rec.outer_ctx, rec.end >= rec.start > 0)


@pytest.mark.parametrize("capture", [True, False])
def test_the_c_path_makes_the_records_the_python_core_makes(capture: bool) -> None:
    shapes = {}
    for name in (core.NATIVE, core.PYTHON):
        sink = Sink()
        monitor = core.new_monitor(CodeFilter(), Capturer(100, 10, False), capture, capture,
                                   ("token",), recording=name)
        monitor.set_consumers([sink])
        monitor.start()
        try:
            program()
        finally:
            monitor.stop()
        shapes[name] = [shape(r) for r in sink.records]
        if name == core.NATIVE:
            stats = monitor.hot_path.stats() if monitor.hot_path else None  # type: ignore[attr-defined]
    assert shapes[core.NATIVE] == shapes[core.PYTHON]
    assert len(shapes[core.NATIVE]) == 1 + 30 * 7
    assert stats is None  # stopped: the C callbacks are retired


def test_the_hot_path_is_retired_at_stop_and_replaced_with_new_consumers() -> None:
    sink, other = Sink(), Sink()
    monitor = core.new_monitor(CodeFilter(), Capturer(100, 10, False), True, True, (),
                               recording=core.NATIVE)
    monitor.set_consumers([sink])
    monitor.start()
    try:
        first = monitor.hot_path  # type: ignore[attr-defined]
        program()
        monitor.set_consumers([other])
        second = monitor.hot_path  # type: ignore[attr-defined]
        program()
        counts = second.stats()
        # the per-code decisions remembered in C are the second HotPath's now
        decided = [second.decided(f.__code__) for f in (leaf, raises, program, Sink.on_end)]
        stale = first.decided(leaf.__code__)
    finally:
        monitor.stop()
    assert first is not second and second.generation > first.generation
    # Sink.on_end is this test file's code too, but it only runs inside the callbacks, where
    # no event is delivered: never decided
    assert decided == ["traced", "traced", "traced", None] and stale is None
    assert monitor.hot_path is None  # type: ignore[attr-defined]
    assert len(sink.records) == len(other.records) == 1 + 30 * 7
    # the second HotPath decided again (through Python, once per code object), then ran in C
    # (program() is the root: on_root; the first call of each of the 5 functions: learnt)
    assert counts["c_starts"] == 30 * 7 - 5


def test_captured_arguments_are_left_out_of_the_gcs_lists() -> None:
    # a kept record's arguments are strs in tuples: untracked at once (the GC would untrack
    # them on its first pass anyway), so collections do not traverse them again and again
    sink = Sink()
    monitor = core.new_monitor(CodeFilter(), Capturer(100, 10, False), True, True, (),
                               recording=core.NATIVE)
    monitor.set_consumers([sink])
    monitor.start()
    try:
        program()
    finally:
        monitor.stop()
    made_in_c = [r.args for r in sink.records if r.info.qualname == "secret_and_kinds"][1:]
    assert made_in_c and all(args for args in made_in_c)
    assert not any(gc.is_tracked(args) or any(gc.is_tracked(a) for a in args)
                   for args in made_in_c)
