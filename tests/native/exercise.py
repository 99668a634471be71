"""Scenarios for flowtrace_otel._native, each run in its own process.

``python exercise.py NAME`` runs one scenario and prints a JSON line of what it saw;
``python exercise.py all`` runs every scenario that can share a process (the memory check
runs that under valgrind).  tests/test_native.py asserts on the JSON.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from types import CodeType
from typing import Any

from flowtrace_otel import _native, records
from flowtrace_otel.capture import Capturer
from flowtrace_otel.redaction import DEFAULT_REDACT

TOOL = 4


def fib(n: int) -> int:
    """The workload."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def helper(n: int) -> int:
    """Code the predicate does not want."""
    return n + 1


def wants(*names: str) -> Callable[[CodeType], bool]:
    """A predicate that wants the code objects with these names and counts what it was asked."""
    asked: list[str] = []

    def predicate(code: CodeType) -> bool:
        asked.append(code.co_name)
        return code.co_name in names

    predicate.asked = asked  # type: ignore[attr-defined]
    return predicate


def calls_of(name: str) -> int:
    """Completed calls recorded for the code object named ``name`` (0 if none)."""
    return sum(calls for code, calls, _ns in _native.stats()["codes"] if code.co_name == name)


def counts() -> dict[str, object]:
    """Everything in stats() but the code rows."""
    return {k: v for k, v in _native.stats().items() if k != "codes"}


def scenario_counts() -> dict[str, object]:
    """Calls counted exactly; the predicate asked once per code object; durations add up."""
    predicate = wants("fib")
    _native.start(TOOL, predicate)
    try:
        fib(15)
        for i in range(100):
            helper(i)
    finally:
        _native.stop()
    ns = sum(ns for code, _calls, ns in _native.stats()["codes"] if code.co_name == "fib")
    return {"fib": calls_of("fib"), "helper": calls_of("helper"), "fib_ns": ns,
            "asked_fib": predicate.asked.count("fib"),  # type: ignore[attr-defined]
            "asked_helper": predicate.asked.count("helper"),  # type: ignore[attr-defined]
            **counts()}


def scenario_threads() -> dict[str, object]:
    """Every thread has its own stack; a thread that ends frees it."""
    _native.start(TOOL, wants("fib"))
    seen: list[int] = []
    barrier = threading.Barrier(5)

    def work() -> None:
        fib(12)
        barrier.wait()  # all four threads hold a stack at once
        barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        barrier.wait()
        seen.append(_native.stats()["threads"])
        barrier.wait()
        for t in threads:
            t.join()
        seen.append(_native.stats()["threads"])
    finally:
        _native.stop()
    return {"threads_running": seen[0], "threads_after_join": seen[1], "fib": calls_of("fib")}


def scenario_racing_decision() -> dict[str, object]:
    """Two threads decide about the same code object at once: one slot, both calls counted."""
    namespace: dict[str, object] = {}
    exec("def contended():\n    return 1\n", namespace)
    both_asking = threading.Barrier(2, timeout=30)

    def predicate(code: CodeType) -> bool:
        if code.co_name == "contended":
            both_asking.wait()  # each thread is inside the predicate when the other decides
        return code.co_name == "contended"

    _native.start(TOOL, predicate)
    try:
        threads = [threading.Thread(target=namespace["contended"]) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls = calls_of("contended")
        rows = sum(1 for code, _c, _ns in _native.stats()["codes"] if code.co_name == "contended")
        namespace.clear()
        threads.clear()
        gc.collect()
        left = sum(1 for code, _c, _ns in _native.stats()["codes"] if code.co_name == "contended")
    finally:
        _native.stop()
    return {"calls": calls, "rows": rows, "rows_after_death": left}


def scenario_code_freed() -> dict[str, object]:
    """A code object that dies takes its slot along; its row leaves stats()."""
    namespace: dict[str, object] = {}
    exec("def short_lived(n):\n    return n * 2\n", namespace)
    _native.start(TOOL, wants("short_lived"))
    try:
        namespace["short_lived"](3)  # type: ignore[operator]
        before = calls_of("short_lived")
        slots_before = _native.stats()["slots"]
        namespace.clear()
        gc.collect()
        after = calls_of("short_lived")
        slots_freed = slots_before - _native.stats()["slots"]  # type: ignore[operator]
    finally:
        _native.stop()
    return {"before": before, "after": after, "slots_freed": slots_freed}


def scenario_unwind() -> dict[str, object]:
    """Calls that raise leave no stale entry: the next return pops to the right place."""
    def boom(n: int) -> int:
        if n == 0:
            raise ValueError("deep")
        return boom(n - 1)

    def outer() -> int:
        try:
            boom(5)
        except ValueError:
            pass
        return 1

    _native.start(TOOL, wants("boom", "outer"))
    try:
        outer()
    finally:
        _native.stop()
    return {"outer": calls_of("outer"), "boom": calls_of("boom"), **counts()}


def scenario_predicate_error() -> dict[str, object]:
    """A predicate that raises makes the code unwanted and is counted; the program goes on."""
    def predicate(code: CodeType) -> bool:
        raise RuntimeError("predicate bug")

    _native.start(TOOL, predicate)
    try:
        result = fib(10)
    finally:
        _native.stop()
    return {"result": result, "fib": calls_of("fib"), **counts()}


def scenario_interrupt() -> dict[str, object]:
    """A KeyboardInterrupt raised while the predicate runs reaches the program."""
    def predicate(code: CodeType) -> bool:
        raise KeyboardInterrupt

    _native.start(TOOL, predicate)
    try:
        fib(3)
        reached = "no"
    except KeyboardInterrupt:
        reached = "yes"
    finally:
        _native.stop()
    return {"interrupt_reached_program": reached}


def scenario_restart() -> dict[str, object]:
    """stop() then start() again: a new generation asks again and counts afresh."""
    _native.start(TOOL, wants("fib"))
    fib(5)
    _native.stop()
    first = calls_of("fib")
    _native.start(TOOL, wants("fib"))
    fib(6)
    _native.stop()
    return {"first": first, "second": calls_of("fib"), "tool_free": sys.monitoring.get_tool(TOOL)}


def scenario_tool_taken() -> dict[str, object]:
    """A taken tool id is the caller's ValueError, and nothing is left half started."""
    sys.monitoring.use_tool_id(TOOL, "someone else")
    try:
        _native.start(TOOL, wants("fib"))
        error = "none"
    except ValueError as exc:
        error = str(exc)
    sys.monitoring.free_tool_id(TOOL)
    return {"error": error, "active": _native.stats()["active"]}


def scenario_fork() -> dict[str, object]:
    """A forked child inherits a consistent state: it goes on counting, and stops cleanly."""
    _native.start(TOOL, wants("fib"))
    fib(5)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        fib(5)
        child = calls_of("fib")
        _native.stop()
        os.write(write_end, json.dumps({"child": child, "threads": counts()["threads"]}).encode())
        os.close(write_end)
        sys.exit(0)  # a normal exit: the child finalizes, so the memory check sees its leaks
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_report = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    parent = calls_of("fib")
    _native.stop()
    return {"parent": parent, "child_exit": os.waitstatus_to_exitcode(status), **child_report}


def scenario_exit_running() -> dict[str, object]:
    """Left running at exit (with a daemon thread inside a wanted call): stops cleanly."""
    _native.start(TOOL, wants("fib", "spin"))
    started = threading.Event()

    def spin() -> None:
        started.set()
        while True:
            fib(8)

    threading.Thread(target=spin, daemon=True).start()
    started.wait()
    fib(5)
    return {"exiting": True}


class _Opaque:
    """A user object: captured as a placeholder."""

    def __repr__(self) -> str:
        raise AssertionError("capture ran a user __repr__")


def _capture_values() -> list[object]:
    """Values for every path of capture.c: scalars, containers, cuts, failures, fallbacks."""
    looped: list[object] = [1]
    looped.append(looped)
    table: dict[object, object] = {"password": "hunter2", "n": 1}
    table["me"] = table
    return [
        None, True, 3, -(2**63), 2**64, 2**200, 2**300, 10**5000, 1.5, float("nan"), 2j,
        range(3), range(10**5000), ..., "short", "x" * 1000, "it's", "é\ud800" * 50,
        b"bytes", b"\x00" * 500, bytearray(b"ba" * 300), [], (), (1,), set(), frozenset(),
        {1, 2}, frozenset({"a"}), [1, "a", None, 2.5], {"api_key": 1, "x": [1, 2]},
        list(range(100)), [[[[1]]]], looped, table, [range(10**5000)], [[0] * 30, range(10**5000)],
        {"a": {"b": {"c": {"d": 1}}}}, [_Opaque(), _Opaque], fib, len, [].append, sys,
        ValueError("x"), [fib, sys, _Opaque()] * 3,
    ]


def _refcounts(value: object, depth: int = 0) -> list[int]:
    """The reference counts of ``value`` and of the items it holds, a few levels deep."""
    counts = [sys.getrefcount(value)]
    if depth < 4 and type(value) in (list, tuple, set, frozenset):
        for item in list(value):  # type: ignore[call-overload]
            counts += _refcounts(item, depth + 1)
    elif depth < 4 and type(value) is dict:
        for key, item in list(value.items()):  # type: ignore[attr-defined]
            counts += _refcounts(key, depth + 1) + _refcounts(item, depth + 1)
    return counts


def scenario_capture() -> dict[str, object]:
    """The C capture: the reference's text, no reference count changed, no leak, cycles freed."""
    mismatches, changed = [], []
    values = _capture_values()
    for options in ({}, {"max_repr": 4, "max_items": 0}, {"max_repr": 1000, "max_items": 50},
                    {"redact": DEFAULT_REDACT}, {"full_repr": True, "max_repr": 300}):
        native = Capturer(**options, native=True)  # type: ignore[arg-type]
        reference = Capturer(**options, native=False)  # type: ignore[arg-type]
        for index, value in enumerate(values):
            if options.get("full_repr") and any(type(v) is _Opaque for v in [value]):
                continue  # full_repr calls the user's __repr__ by design
            # the first call may remember a dict key in the capturer's secret cache (one
            # reference kept on purpose, and only when the key is a mortal str, which depends on
            # how it was interned): counts are compared from the second call on
            text = native(value)
            before = _refcounts(value)
            for _ in range(20):
                text = native(value)
            if _refcounts(value) != before:
                changed.append(index)
            if text != reference(value):
                mismatches.append(index)
    return {"mismatches": mismatches, "refcounts_changed": changed, **_capture_mutations(),
            "cycle_freed": _capture_cycle_freed()}


def _capture_mutations() -> dict[str, object]:
    """Our Python code (is_secret) may let another thread mutate what capture walks: a
    callback that mutates the container stands in for that thread."""
    walked: list[object] = []

    def shrink(name: str, redact: object) -> bool:
        target = walked[0]
        if type(target) is dict:
            target.clear()  # type: ignore[attr-defined]
        elif type(target) is list:
            del target[:]  # type: ignore[arg-type]
        return False

    seen = {}
    for name, target in (("dict", {f"k{i}": [i, [i]] for i in range(20)}),
                         ("list", [{f"k{i}": [i]} for i in range(20)])):
        walked[:] = [target]
        capture = _native.Capturer(80, 8, False, ("secret",), {}, shrink, repr,
                                   lambda value, error: f"{type(error).__name__}: {error}")
        seen[name] = capture(target)
    return {"mutated_" + name: text for name, text in seen.items()}


def _capture_cycle_freed() -> bool:
    """A Capturer in a reference cycle is collected (its tp_traverse/tp_clear)."""
    class Holder:
        def is_secret(self, name: str, redact: object) -> bool:
            return False

    holder = Holder()
    holder.capture = _native.Capturer(  # type: ignore[attr-defined]
        80, 8, False, (), {}, holder.is_secret, repr, repr)
    alive = weakref.ref(holder)
    del holder
    gc.collect()
    return alive() is None


def scenario_record() -> dict[str, object]:
    """The C record: every field written and replaced, helpers' error paths, cycles and a
    deep chain freed (no leak, no reference left behind: the memory check's part)."""
    info = records.CodeInfo(fib.__code__, ())
    thread = records.ThreadState()
    ctx = object()
    freed: list[weakref.ref[object]] = []

    class State:
        """Consumer state pointing back at its record."""

    slices, reprs, errors = [], [], 0
    for i in range(200):
        root = _native.Record(info=info, thread=thread, id=i, start=10, ctx=ctx, outer_ctx=ctx)
        child = _native.Record(info=info, thread=thread, id=i + 1000, parent=root, root=root,
                               start=20, end=30, status="returned", recording=True,
                               args=(("n", str(i), "p"),), result="x" * 50,
                               exc=("ValueError", "m", i), exc_state="caught",
                               caught=[("KeyError", "k")], error=ValueError("e"),
                               runs=[21, 22, 23, 24][: i % 5], suspended=1, resumes=2,
                               task="t", ctx=object(), outer_ctx=ctx)
        child.ext = state = State()
        state.rec = child  # type: ignore[attr-defined]
        freed.append(weakref.ref(state))
        child.result = "replaced"  # the old value released
        slices.append(child.run_slices())
        reprs.append(repr(child))
        del child.runs
        try:
            child.run_slices()
        except AttributeError:
            errors += 1
        try:
            child.start = "late"  # type: ignore[assignment]
        except TypeError:
            errors += 1
        del root, child, state
    gc.collect()
    deep = _native.Record(id=0, root=None)
    for depth in range(1, 100_000):
        deep = _native.Record(id=depth, parent=deep, root=None)
    del deep
    return {"slices": len(slices), "last_slices": slices[-1], "repr": reprs[-1],
            "errors": errors, "cycles_freed": sum(ref() is None for ref in freed)}


# --- the native core's C hot path (monitor.c, flowtrace_otel/native_monitor.py) -------------
class Sink:
    """A consumer keeping every finished record (``refuse``: records no trace)."""

    def __init__(self, refuse: bool = False) -> None:
        self.records: list[records.Record] = []
        self.refuse = refuse

    def on_root(self, record: records.Record) -> bool:
        return not self.refuse

    def on_end(self, record: records.Record) -> None:
        self.records.append(record)


def _native_monitor(sink: Sink) -> Any:
    """A started native-core monitor reporting to ``sink``, capturing values."""
    from flowtrace_otel import core
    from flowtrace_otel.filters import CodeFilter

    monitor = core.new_monitor(CodeFilter(), Capturer(100, 10, False), True, True,
                               DEFAULT_REDACT, recording=core.NATIVE)
    monitor.set_consumers([sink])
    monitor.start(order=(TOOL, 3))
    return monitor


def takes(value: object, password: str = "", *rest: object, **named: object) -> object:
    """Arguments of every kind, a secret one included; returns its first."""
    return value


def raises(n: int) -> int:
    """A call that unwinds (the Python PY_UNWIND callback ends it)."""
    raise ValueError(n)


def counting(n: int) -> Iterator[int]:
    """A generator: its start is C's, its yields and resumes Python's."""
    for i in range(n):
        yield fib(i)


def outer() -> int:
    """The root of each traced program below."""
    total = fib(10)
    for i in range(50):
        takes(i, "hunter2", 1, 2, key=i)
    try:
        raises(3)
    except ValueError:
        total += 1
    total += sum(counting(5))
    return total


def scenario_hot_calls() -> dict[str, object]:
    """Records made in C are whole, counted and leak nothing: objects' refcounts are unchanged."""
    probe = object()
    before = sys.getrefcount(probe)
    sink = Sink()
    monitor = _native_monitor(sink)
    try:
        outer()
        for _ in range(20):
            takes(probe)  # captured as text: the record keeps no reference to it
        stats = monitor.hot_path.stats()
    finally:
        monitor.stop()
    info_refs = sys.getrefcount(sink.records[0].info)
    named = {r.info.qualname for r in sink.records}
    secret = next(r.args for r in sink.records if r.info.qualname == "takes")
    raised = next(r.status for r in sink.records if r.info.qualname == "raises")
    ids = [r.id for r in sink.records]
    count = len(sink.records)
    sink.records.clear()
    del monitor
    gc.collect()
    alive = sum(type(o) is records.ThreadState and o is not records._NOBODY
                for o in gc.get_objects())
    records_alive = sum(type(o) is records.Record and o.id != 0 for o in gc.get_objects())
    return {"thread_states_alive": alive, "records_alive": records_alive, "records": count,
            "names": sorted(named), "secret": secret, "raised": raised,
            "unique_ids": len(set(ids)) == len(ids), "probe_refs": sys.getrefcount(probe) - before,
            "info_refs_sane": info_refs > 1, "stats": stats}


def scenario_hot_ghosts() -> dict[str, object]:
    """A trace nobody records: calls push the shared ghost in C and allocate no record."""
    sink = Sink(refuse=True)
    monitor = _native_monitor(sink)
    try:
        outer()
        ghost = next(info.ghost for _, info in list(monitor.infos.values())
                     if info is not None and info.qualname == "fib")
        refs = sys.getrefcount(ghost)
        outer()
        refs_after = sys.getrefcount(ghost)
        stats = monitor.hot_path.stats()
    finally:
        monitor.stop()
    return {"records": len(sink.records), "stats": stats, "ghost_refs": refs_after - refs}


def scenario_hot_threads() -> dict[str, object]:
    """Threads bound to the C path end and release their thread state; none is left over."""
    sink = Sink()
    monitor = _native_monitor(sink)

    def work() -> None:
        outer()

    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = monitor.hot_path.stats()
    finally:
        monitor.stop()
    threads_seen = len({id(r.thread) for r in sink.records})
    roots = sum(r.parent is None for r in sink.records)
    sink.records.clear()
    del monitor, threads
    gc.collect()
    alive = sum(type(o) is records.ThreadState and o is not records._NOBODY
                for o in gc.get_objects())
    return {"threads": threads_seen, "roots": roots, "stats": stats,
            "thread_states_alive": alive}


def scenario_hot_stop_open() -> dict[str, object]:
    """Stopping inside open calls ends them as unfinished; the returns after it are ignored."""
    sink = Sink()
    monitor = _native_monitor(sink)

    def deep(n: int) -> int:
        if n == 0:
            monitor.stop()
            return 0
        return deep(n - 1) + 1

    def top() -> int:
        return deep(5) + fib(5)

    top()
    monitor.stop()
    statuses = sorted({r.status or "open" for r in sink.records})
    return {"records": len(sink.records), "statuses": statuses,
            "unfinished": sum(r.status == "unfinished" for r in sink.records)}


def scenario_hot_replaced_inside() -> dict[str, object]:
    """Consumers that replace the consumers, or stop the monitor, from inside the callbacks.

    Either retires the running HotPath while its own callback runs (the C path's on_end, the
    Python path's on_root): the callback must not touch the freed object afterwards.
    """
    seen: list[str] = []
    monitor: Any = None

    class Replacing(Sink):
        def on_root(self, record: records.Record) -> bool:
            monitor.set_consumers([Replacing()])  # in the Python fallback (a root)
            return True

        def on_end(self, record: records.Record) -> None:
            seen.append(record.info.qualname)
            if len(seen) % 7 == 0:
                monitor.set_consumers([Replacing()])  # in the C path's on_end

    class Stopping(Sink):
        def on_end(self, record: records.Record) -> None:
            self.records.append(record)
            if len(self.records) == 300:
                monitor.stop()  # in the C path's on_end: ends the open calls, retires us

    monitor = _native_monitor(Replacing())
    try:
        for _ in range(5):
            outer()
    finally:
        monitor.stop()
    stopping = Stopping()
    monitor = _native_monitor(stopping)
    try:
        outer()
        outer()
    finally:
        monitor.stop()
    gc.collect()
    return {"replaced": len(seen), "stopped": len(stopping.records),
            "unfinished": sum(r.status == "unfinished" for r in stopping.records)}


def scenario_hot_fork() -> dict[str, object]:
    """A child forked inside traced calls goes on recording in C and ends its calls."""
    sink = Sink()
    monitor = _native_monitor(sink)
    child_status = -1

    def forks() -> int:
        nonlocal child_status
        pid = os.fork()
        if pid == 0:  # the child: its calls are recorded from its copy of the stacks
            code = 1
            try:
                before = len(sink.records)
                fib(8)
                monitor.stop()
                ended = [r for r in sink.records[before:] if r.status == "returned"]
                code = 0 if len(ended) == 67 and ended[-1].parent is not None else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        child_status = os.waitstatus_to_exitcode(status)
        return fib(6)

    try:
        forks()
    finally:
        monitor.stop()
    return {"child": child_status, "records": len(sink.records)}


SCENARIOS: dict[str, Callable[[], dict[str, object]]] = {
    name.removeprefix("scenario_"): func for name, func in globals().items()
    if name.startswith("scenario_")
}
SHARES_A_PROCESS = [name for name in SCENARIOS
                    if name not in ("fork", "exit_running", "hot_fork")]


def main(name: str) -> None:
    """Run one scenario, or all that share a process, then the exit one."""
    if name == "all":
        for each in SHARES_A_PROCESS:
            print(json.dumps({each: SCENARIOS[each]()}), flush=True)
        print(json.dumps({"fork": SCENARIOS["fork"]()}), flush=True)
        print(json.dumps({"hot_fork": SCENARIOS["hot_fork"]()}), flush=True)
        print(json.dumps({"exit_running": SCENARIOS["exit_running"]()}), flush=True)
        return
    print(json.dumps(SCENARIOS[name]()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
