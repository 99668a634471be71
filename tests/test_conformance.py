"""What every core's monitor must do, through the monitor protocol only.

Each test runs once per core that can record here (``core.recording_cores()``): the native
core (the C hot path, where the extension is built) and the pure-Python reference core.
Tests drive a monitor made by ``core.new_monitor`` (hand-offs wired) with a consumer that
keeps the raw records, and check the records' fields, not any core's internals.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from flowtrace_otel import core
from flowtrace_otel.capture import Capturer
from flowtrace_otel.filters import CodeFilter
from flowtrace_otel.monitor_protocol import CallMonitor
from flowtrace_otel.records import KIND_POSITIONAL, CodeInfo, Record, ThreadState

CORES = core.recording_cores()


class Sink:
    """A consumer keeping every finished record; ``refuse``: records no trace."""

    def __init__(self, refuse: bool = False) -> None:
        self.records: list[Record] = []
        self.roots: list[Record] = []
        self.errors_seen: list[BaseException | None] = []
        self.refuse = refuse

    def on_root(self, record: Record) -> bool:
        self.roots.append(record)
        return not self.refuse

    def on_end(self, record: Record) -> None:
        self.records.append(record)
        self.errors_seen.append(record.error)

    def named(self, name: str) -> list[Record]:
        return [r for r in self.records if r.info.qualname.rsplit(".", 1)[-1] == name]

    def one(self, name: str) -> Record:
        (record,) = self.named(name)
        return record


Run = Callable[..., tuple[Any, Sink, CallMonitor]]


@pytest.fixture(params=CORES)
def core_name(request: pytest.FixtureRequest) -> str:
    """The core under test."""
    name: str = request.param
    return name


def make_monitor(core_name: str, sink: Sink) -> CallMonitor:
    """A monitor of ``core_name`` reporting to ``sink``, not started."""
    monitor = core.new_monitor(CodeFilter(), Capturer(100, 10, False), True, True, (),
                               recording=core_name)
    monitor.set_consumers([sink])
    return monitor


@pytest.fixture
def run(core_name: str) -> Iterator[Run]:
    """Run a function under a fresh monitor of one core; give its result, sink and monitor."""
    started: list[CallMonitor] = []

    def go(fn: Callable[..., Any], *args: Any, sink: Sink | None = None) -> tuple[
            Any, Sink, CallMonitor]:
        sink = sink or Sink()
        monitor = make_monitor(core_name, sink)
        monitor.start()
        started.append(monitor)
        try:
            result = fn(*args)
        finally:
            monitor.stop()
        return result, sink, monitor

    yield go
    assert all(m.tool_id is None for m in started)


# --- the traced program -------------------------------------------------------------------------
def leaf(x: int) -> int:
    return x * 2


def branch(x: int) -> int:
    return leaf(x) + leaf(x + 1)


def fails(text: str) -> None:
    raise ValueError(text)


def catches() -> str:
    try:
        fails("handled")
    except ValueError as error:
        return str(error)
    return "unreachable"


def lets_through() -> None:
    try:
        fails("passes")
    finally:
        pass


def counter(n: int) -> Iterator[int]:
    try:
        for i in range(n):
            yield leaf(i)
    except KeyError:
        yield -1


def consume(n: int) -> int:
    return sum(counter(n))


def close_early() -> int:
    gen = counter(5)
    first = next(gen)
    gen.close()
    return first


def throw_in() -> int:
    gen = counter(5)
    next(gen)
    return gen.throw(KeyError("k"))


async def pause(n: int) -> int:
    for _ in range(n):
        await asyncio.sleep(0)
    return leaf(n)


async def starter() -> int:
    task = asyncio.get_running_loop().create_task(pause(2), name="worker-task")
    return await task


def in_thread() -> int:
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(leaf(5)), name="helper")
    thread.start()
    thread.join()
    return out[0]


def in_pool() -> int:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(leaf, 7).result()


# --- plain calls and fields --------------------------------------------------------------------
def test_nested_calls_are_linked_timed_and_valued(run: Run) -> None:
    result, sink, monitor = run(branch, 3)
    assert result == 14
    (top,) = sink.named("branch")
    first, second = sink.named("leaf")
    assert top.parent is None and top.root is top and sink.roots == [top]
    for child in (first, second):
        assert child.parent is top and child.root is top
        assert top.start <= child.start <= child.end <= top.end
        assert child.status == "returned" and child.recording
    assert first.args == (("x", "3", KIND_POSITIONAL),) and first.result == "6"
    assert second.args == (("x", "4", KIND_POSITIONAL),) and second.result == "8"
    assert top.id < first.id < second.id
    assert sink.records == [first, second, top]  # children end first
    assert monitor.epoch_offset_ns > 0


def test_every_field_is_set_and_typed(run: Run) -> None:
    _, sink, _ = run(branch, 1)
    for rec in sink.records:
        assert all(hasattr(rec, name) for name in Record.__slots__)
        assert isinstance(rec.info, CodeInfo) and isinstance(rec.thread, ThreadState)
        assert rec.thread.ident == threading.get_ident()
        assert isinstance(rec.id, int) and rec.id > 0
        assert rec.exc is rec.exc_state is rec.caught is rec.error is rec.task is None
        assert rec.suspended == rec.resumes == 0 and rec.runs is None
        assert rec.ext is None  # the consumer's, untouched by the core
        assert rec.run_slices() == [(rec.start, rec.end)]


# --- exceptions --------------------------------------------------------------------------------
def test_exception_caught_by_the_caller(run: Run) -> None:
    result, sink, _ = run(catches)
    assert result == "handled"
    child, parent = sink.one("fails"), sink.one("catches")
    assert child.status == "raised" and child.exc is not None
    assert child.exc[:2] == ("ValueError", "handled") and child.exc_state == "caught"
    assert parent.status == "returned" and parent.caught == [("ValueError", "handled")]
    assert sink.errors_seen[sink.records.index(child)] is not None  # only during on_end
    assert child.error is None


def test_exception_propagated_through_handlers_that_let_it_go(run: Run) -> None:
    with pytest.raises(ValueError, match="passes"):
        run(lets_through)


def test_exception_propagated_states(run: Run) -> None:
    sink = Sink()
    with pytest.raises(ValueError):
        run(lets_through, sink=sink)
    child, parent = sink.one("fails"), sink.one("lets_through")
    assert child.exc_state == parent.exc_state == "propagated"
    assert parent.status == "raised" and not parent.caught


# --- generators and coroutines -----------------------------------------------------------------
def test_generator_is_one_record_with_its_run_slices(run: Run) -> None:
    result, sink, _ = run(consume, 3)
    assert result == 0 + 2 + 4
    gen, caller = sink.one("counter"), sink.one("consume")
    assert gen.parent is caller and gen.status == "returned"
    assert gen.resumes == 3 and gen.suspended > 0
    slices = gen.run_slices()
    assert len(slices) == 4  # three yields: four runs
    assert slices[0][0] == gen.start and slices[-1][1] == gen.end
    assert all(a <= b for a, b in slices)
    assert sum(b - a for a, b in slices) + gen.suspended == gen.end - gen.start
    assert all(leaf.parent is gen for leaf in sink.named("leaf"))


def test_generator_closed_early(run: Run) -> None:
    result, sink, _ = run(close_early)
    assert result == 0
    gen = sink.one("counter")
    assert gen.status == "closed" and gen.exc is None
    assert gen.end <= sink.one("close_early").end


def test_generator_throw_is_a_resumption(run: Run) -> None:
    result, sink, _ = run(throw_in)
    assert result == -1
    gen = sink.one("counter")
    assert gen.resumes == 1 and gen.caught is not None
    assert gen.caught[0] == ("KeyError", "'k'")
    assert gen.status == "closed"  # collected (so closed) when throw_in returned


def test_coroutine_task_with_resumes(run: Run) -> None:
    result, sink, _ = run(asyncio.run, starter())
    assert result == 4
    coro, creator = sink.one("pause"), sink.one("starter")
    assert coro.parent is creator and coro.task == "worker-task"
    assert coro.resumes >= 2 and len(coro.run_slices()) >= 3
    assert sink.one("leaf").parent is coro


# --- threads and hand-offs ---------------------------------------------------------------------
def test_thread_first_call_has_its_starter_as_parent(run: Run) -> None:
    result, sink, _ = run(in_thread)
    assert result == 10
    child, starter_rec = sink.one("leaf"), sink.one("in_thread")
    lam = sink.one("<lambda>")
    assert lam.parent is starter_rec and child.parent is lam
    assert lam.thread.name == "helper" and lam.thread.ident != starter_rec.thread.ident


def test_pool_work_item_has_its_submitter_as_parent(run: Run) -> None:
    result, sink, _ = run(in_pool)
    assert result == 14
    assert sink.one("leaf").parent is sink.one("in_pool")


# --- unrecorded traces -------------------------------------------------------------------------
def test_unrecorded_trace_reports_nothing_and_writes_no_ghost(run: Run) -> None:
    sink = Sink(refuse=True)
    _, sink, monitor = run(consume, 3, sink=sink)
    assert sink.records == [] and len(sink.roots) == 1
    assert monitor.open_records() == []  # nothing left open either


def many_leaves(n: int) -> int:
    return sum(leaf(i) for i in range(n))


def test_a_session_on_this_core_folds_repeated_calls(
        core_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowtrace_otel import TraceSession

    monkeypatch.setenv(core.CORE_ENV, core_name)
    monkeypatch.setattr(core, "_chosen", None)  # chosen again, from the variable
    with TraceSession(record_fold_after=3) as session:
        assert many_leaves(50) == 2 * sum(range(50))
    assert core.current_core().recording == core_name
    leaves = [e for e in session.events if e.func_name == "leaf"]
    kept = [e for e in leaves if e.fold is None]
    (fold,) = [e for e in leaves if e.fold is not None]
    assert len(kept) == 3 and fold.fold is not None and fold.fold.count == 47
    monkeypatch.setattr(core, "_chosen", None)


# --- start and stop mid-call -------------------------------------------------------------------
def test_start_and_stop_in_the_middle_of_calls(core_name: str) -> None:
    holder: dict[str, CallMonitor] = {}
    sink = Sink()

    def inner_stop() -> int:
        holder["monitor"].stop()  # while inner_stop and its caller are open
        return 1

    def outer() -> int:
        leaf(1)
        return inner_stop()

    def started_late() -> int:
        monitor = make_monitor(core_name, sink)
        holder["monitor"] = monitor
        monitor.start()  # started_late itself began before: never recorded
        return outer()

    assert started_late() == 1
    assert {r.info.qualname.rsplit(".", 1)[-1] for r in sink.records} == {
        "leaf", "outer", "inner_stop"}
    assert sink.one("leaf").status == "returned"
    assert sink.one("outer").status == sink.one("inner_stop").status == "unfinished"
    assert sink.one("inner_stop").parent is sink.one("outer")


# --- the protocol's queries --------------------------------------------------------------------
def test_current_open_call_and_dispositions(core_name: str) -> None:
    seen: dict[str, Any] = {}

    def probe() -> None:
        monitor = holder[0]
        call, _ctx = monitor.current()
        seen["current"] = call
        seen["open"] = monitor.open_call()
        seen["thread"] = monitor.thread_calls()
        seen["mine"] = monitor.disposition(probe.__code__)
        seen["library"] = monitor.disposition(threading.Thread.is_alive.__code__)
        seen["hook"] = monitor.disposition(threading.Thread.start.__code__)
        seen["unseen"] = monitor.disposition(never_called.__code__)

    holder: list[CallMonitor] = []

    def go() -> None:
        threading.Thread(target=lambda: None).start()  # meets a hook and library code
        probe()

    monitor = make_monitor(core_name, Sink())
    holder.append(monitor)
    monitor.start()
    try:
        go()
    finally:
        monitor.stop()
    assert seen["current"] is seen["open"] and seen["open"].info.qualname.endswith("probe")
    # the test function began before the monitor started: not a call of its
    assert [r.info.qualname.rsplit(".", 1)[-1] for r in seen["thread"]] == ["go", "probe"]
    assert seen["mine"] == "traced" and seen["hook"] == "hook" and seen["unseen"] is None
    assert seen["library"] in ("ignored", None)  # decided only if it ran while tracing


def never_called() -> None:
    """Never runs: its code object is never decided."""


@pytest.mark.internal_errors_expected
def test_an_internal_error_is_contained_and_reported(run: Run) -> None:
    class Broken(Sink):
        def on_end(self, record: Record) -> None:
            if record.info.qualname == "leaf":
                raise RuntimeError("consumer bug")
            super().on_end(record)

    result, sink, monitor = run(branch, 2, sink=Broken())
    assert result == 10  # the program is unaffected
    assert [str(e) for e in monitor.errors] == ["consumer bug"]  # tracing stopped at once
    assert sink.one("branch").status == "unfinished"  # ended when the monitor stopped


def test_an_interrupt_inside_a_consumer_is_the_programs(core_name: str) -> None:
    class Interrupted(Sink):  # a Ctrl-C whose handler ran inside the consumer's code
        def on_end(self, record: Record) -> None:
            if record.info.qualname == "leaf" and len(self.named("leaf")) == 2:
                raise KeyboardInterrupt  # in the second run: every core's common path
            super().on_end(record)

    sink = Interrupted()
    monitor = make_monitor(core_name, sink)
    monitor.start()
    try:
        branch(2)
        with pytest.raises(KeyboardInterrupt) as raised:
            branch(2)
    finally:
        monitor.stop()
    # it reached the program's own frame (branch), not contained as the tracer's error
    assert any(tb.name == "branch" for tb in raised.traceback)
    assert monitor.errors == [] and len(sink.named("leaf")) == 2


def test_a_consumer_may_decline_a_calls_values(run: Run) -> None:
    class Declines(Sink):
        def wants_values(self, parent: Record | None, info: CodeInfo) -> bool:
            return info.qualname != "leaf"

    _, sink, _ = run(branch, 2, sink=Declines())
    leaves = sink.named("leaf")
    assert len(leaves) == 2 and all(r.args is None and r.result is False for r in leaves)
    assert sink.one("branch").args == (("x", "2", KIND_POSITIONAL),)
    assert sink.one("branch").result == "10"


# --- structure -----------------------------------------------------------------------------------
def test_the_monitor_does_not_import_the_hand_offs() -> None:
    code = ("import sys, flowtrace_otel.monitoring; "
            "print('flowtrace_otel.handoff' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_every_recording_core_is_run_here() -> None:
    assert "python" in CORES
    assert ("native" in CORES) == (core.current_core().native is not None)
    assert core.recording_cores() == CORES
