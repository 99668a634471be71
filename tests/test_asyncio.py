"""asyncio in the core call tree: tasks form their own subtrees under their creator.

A coroutine is one call from its first start to its final return across all its awaits, with
its resumptions counted and its suspended time recorded. Tasks made by ``create_task``,
``gather`` and ``TaskGroup`` are children of the function that created them, and their calls
never mix with another task's even when the tasks interleave.
"""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from flowtrace_otel import TraceSession
from tests._calltree import check_well_formed, children, named, one, parent_name, tree


def leaf(x):
    return x


async def step(x, turns=2):
    for _ in range(turns):
        await asyncio.sleep(0)
        leaf(x)
    return x


def run(coro_fn, *args):
    """A traced sync entry point: ``asyncio.run`` from inside user code."""
    return asyncio.run(coro_fn(*args))


def test_coroutine_is_one_call_across_awaits():
    with TraceSession() as s:
        assert run(step, "a", 3) == "a"
    events = s.events
    check_well_formed(events)
    coro = one(events, "step")
    assert parent_name(events, coro) == "run"  # the task asyncio.run made, under its caller
    assert coro.status == "returned"
    assert coro.resumes == 3
    assert 0 < coro.suspended_ns < coro.end_ns - coro.start_ns
    assert [c.func_name for c in children(events, coro)] == ["leaf"] * 3


async def fan_out_create_task():
    tasks = [asyncio.create_task(step(i), name=f"job-{i}") for i in range(3)]
    leaf("creator")
    return await asyncio.gather(*tasks)


async def fan_out_gather():
    return await asyncio.gather(step(0), step(1), step(2))


async def fan_out_task_group():
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(step(i)) for i in range(3)]
    return [t.result() for t in tasks]


@pytest.mark.parametrize("creator", [fan_out_create_task, fan_out_gather, fan_out_task_group])
def test_tasks_are_children_of_their_creator(creator):
    with TraceSession() as s:
        assert run(creator) == [0, 1, 2]
    events = s.events
    check_well_formed(events)
    steps = named(events, "step")
    assert len(steps) == 3
    top = one(events, creator.__name__)
    assert parent_name(events, top) == "run"
    for coro in steps:
        assert coro.parent_id == top.id
        assert coro.task is not None  # the first coroutine of a task names it
        # the tasks interleave (each awaits twice), yet each task's calls are its own
        leaves = children(events, coro)
        assert [e.args_repr for e in leaves] == [coro.args[0][1]] * 2
    if creator is fan_out_create_task:
        assert sorted(e.task for e in steps) == ["job-0", "job-1", "job-2"]
    assert len({e.task for e in steps}) == 3


def spawn(x):
    """A sync helper that creates a task and returns before the task runs."""
    return asyncio.get_running_loop().create_task(step(x))


async def spawn_from_helper():
    task = spawn("t")
    leaf("after spawn")
    return await task


def test_task_created_in_sync_helper_outlives_it():
    with TraceSession() as s:
        assert run(spawn_from_helper) == "t"
    events = s.events
    check_well_formed(events, outliving={"step"})
    coro = one(events, "step")
    helper = one(events, "spawn")
    assert coro.parent_id == helper.id
    assert coro.end_ns > helper.end_ns  # allowed: a task outlives the call that created it


async def nested_awaits():
    a = await step("x", 1)
    b = await inner_chain()
    return a + b


async def inner_chain():
    await asyncio.sleep(0)
    return leaf("y")


def test_awaited_coroutines_nest_without_tasks():
    with TraceSession() as s:
        assert run(nested_awaits) == "xy"
    events = s.events
    check_well_formed(events)
    assert tree(events) == [
        ["run", [
            ["nested_awaits", [
                ["inner_chain", [["leaf", []]]],
                ["step", [["leaf", []]]],
            ]],
        ]],
    ]
    assert one(events, "nested_awaits").resumes == 2
    assert one(events, "inner_chain").task is None


async def sleeper(started):
    started.set()
    await asyncio.sleep(3600)


async def cancel_one():
    started = asyncio.Event()
    task = asyncio.create_task(sleeper(started))
    await started.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return "not cancelled"


def test_cancelled_task_records_cancelled_error():
    with TraceSession() as s:
        assert run(cancel_one) == "cancelled"
    events = s.events
    check_well_formed(events)
    task = one(events, "sleeper")
    assert parent_name(events, task) == "cancel_one"
    assert task.status == "raised"
    assert task.exc_type == "CancelledError"


async def worker_fails(x):
    await asyncio.sleep(0)
    raise ValueError(f"bad {x}")


async def gather_errors():
    return await asyncio.gather(worker_fails(1), step(2), return_exceptions=True)


def test_task_raising_inside_gather():
    with TraceSession() as s:
        result = run(gather_errors)
    assert isinstance(result[0], ValueError) and result[1] == 2
    events = s.events
    check_well_formed(events)
    failed = one(events, "worker_fails")
    assert parent_name(events, failed) == "gather_errors"
    assert (failed.status, failed.exc_type, failed.exc_msg) == ("raised", "ValueError", "bad 1")


async def forgotten():
    leaf("never runs")


def make_and_drop():
    coro = forgotten()
    del coro
    gc.collect()
    return "dropped"


def test_coroutine_never_awaited():
    with TraceSession() as s:
        with pytest.warns(RuntimeWarning, match="never awaited"):
            assert make_and_drop() == "dropped"
    events = s.events
    check_well_formed(events)
    assert named(events, "forgotten") == []  # it never started: no call, nothing left open
    assert named(events, "leaf") == []


async def ticker(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield leaf(i)


async def consume_ticker():
    out = []
    async for v in ticker(3):
        out.append(leaf(v * 10))
    return out


def test_async_generator_is_one_call():
    with TraceSession() as s:
        assert run(consume_ticker) == [0, 10, 20]
    events = s.events
    check_well_formed(events)
    agen = one(events, "ticker")
    assert parent_name(events, agen) == "consume_ticker"
    assert agen.status == "returned"
    assert agen.resumes >= 3
    assert [c.args_repr for c in children(events, agen)] == ["0", "1", "2"]
    consumer_leaves = [e for e in named(events, "leaf") if parent_name(events, e) != "ticker"]
    assert [e.args_repr for e in consumer_leaves] == ["0", "10", "20"]


async def guarded_ticker():
    try:
        for i in range(10):
            await asyncio.sleep(0)
            yield i
    finally:
        leaf("cleanup")


async def break_async_gen():
    agen = ticker(10)
    async for v in agen:
        if v == 1:
            break
    await agen.aclose()
    guarded = guarded_ticker()
    await anext(guarded)
    received = await guarded.asend(None)
    await guarded.aclose()
    return received


def test_async_generator_closed_early():
    with TraceSession() as s:
        assert run(break_async_gen) == 1
    events = s.events
    check_well_formed(events)
    agen = one(events, "ticker")
    assert agen.status == "closed"
    assert parent_name(events, agen) == "break_async_gen"
    guarded = one(events, "guarded_ticker")
    assert guarded.status == "closed"
    assert [c.args_repr for c in children(events, guarded)] == ["'cleanup'"]


def blocking(x):
    return leaf(x) * 2


async def offload():
    loop = asyncio.get_running_loop()
    a = await asyncio.to_thread(blocking, 1)
    b = await loop.run_in_executor(None, blocking, 2)
    return a + b


def test_to_thread_and_run_in_executor():
    with TraceSession() as s:
        assert run(offload) == 6
    events = s.events
    check_well_formed(events)
    coro = one(events, "offload")
    calls = named(events, "blocking")
    assert len(calls) == 2
    for call in calls:
        assert call.parent_id == coro.id
        assert call.thread_id != coro.thread_id
        assert call.thread_id != threading.get_ident()
        assert [c.func_name for c in children(events, call)] == ["leaf"]


async def eager_parent():
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    task = asyncio.create_task(step("eager", 1))
    return await task


def test_eager_task_factory():
    with TraceSession() as s:
        assert run(eager_parent) == "eager"
    events = s.events
    check_well_formed(events)
    assert parent_name(events, one(events, "step")) == "eager_parent"


def test_task_created_by_untraced_code_is_not_adopted_by_a_stale_record():
    """Each ``asyncio.run`` from the test body (not traced) is a trace of its own."""
    with TraceSession() as s:
        asyncio.run(step("a", 1))
        asyncio.run(step("b", 1))
    events = s.events
    check_well_formed(events)
    steps = named(events, "step")
    assert [e.parent_id for e in steps] == [None, None]


# a coroutine that is not user code (file names in angle brackets are never traced), standing
# for a library wrapper that a task runs around the user's coroutines
_ns: dict[str, object] = {}
exec(compile("async def library_wrapper(a, b):\n    return (await a, await b)\n",
             "<library>", "exec"), _ns)
library_wrapper = _ns["library_wrapper"]


async def outer_awaits_inner(x):
    return await step(x, 1)


async def wrapped_tasks():
    timed = asyncio.create_task(asyncio.wait_for(outer_awaits_inner("w"), 60))
    both = asyncio.create_task(library_wrapper(step("a", 1), step("b", 1)))
    leaf("creator")
    return await timed, await both


def test_user_coroutines_in_a_library_wrapped_task_are_children_of_the_creator():
    with TraceSession() as s:
        assert run(wrapped_tasks) == ("w", ("a", "b"))
    events = s.events
    check_well_formed(events)
    creator = one(events, "wrapped_tasks")
    outer = one(events, "outer_awaits_inner")
    assert outer.parent_id == creator.id
    assert outer.task is not None
    inner = [e for e in named(events, "step") if e.args[0][1] == "'w'"]
    assert [parent_name(events, e) for e in inner] == ["outer_awaits_inner"]  # awaited: nested
    wrapped = [e for e in named(events, "step") if e.args[0][1] in ("'a'", "'b'")]
    assert [e.parent_id for e in wrapped] == [creator.id, creator.id]


async def waiter(event, i):
    await event.wait()
    return leaf(i)


async def many_wrapped_tasks(n):
    event = asyncio.Event()
    tasks = [asyncio.create_task(library_wrapper(waiter(event, i), asyncio.sleep(0)))
             for i in range(n)]
    await asyncio.sleep(0)
    event.set()
    return [pair[0] for pair in await asyncio.gather(*tasks)]


def test_many_live_tasks_keep_their_creator():
    """More live tasks than the pending table's first purge size: none loses its parent."""
    with TraceSession() as s:
        assert run(many_wrapped_tasks, 300) == list(range(300))
    events = s.events
    check_well_formed(events)
    creator = one(events, "many_wrapped_tasks")
    waiters = named(events, "waiter")
    assert len(waiters) == 300
    assert all(w.parent_id == creator.id for w in waiters)
