"""Property tests: generated call shapes keep the tree's invariants (issue 7, item 8).

Hypothesis generates a small program as a tree of nodes; a little interpreter (user code, so
traced) runs it with plain calls, recursion, raising and catching, generators consumed in full,
closed early or finished by another call than the one that started them, coroutines gathered
as tasks, and threads. Traced, every call ends, every parent exists, there are no cycles, each
child's time lies within its parent's (a generator outliving its starter aside), children are
reported before their parents, each function was recorded exactly as often as it ran, and the
result is the untraced result.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._calltree import (
    check_children_reported_first,
    check_well_formed,
    ordered_session,
    short,
)

ran: list[str] = []  # the name of every interpreter function, once per call (list.append is atomic)


class Boom(Exception):
    """The generated programs' own exception."""


# --- the interpreter (traced) -----------------------------------------------------------------
def run_node(node, in_loop):
    ran.append("run_node")
    kind = node[0]
    if kind == "leaf":
        return node[1]
    if kind == "plain":
        return plain(node[1], in_loop)
    if kind == "recurse":
        return recurse(node[1], node[2], in_loop)
    if kind == "raise":
        return raise_after(node[1], in_loop)
    if kind == "catch":
        return catch(node[1], in_loop)
    if kind == "gen":
        return consume(node[1], node[2], node[3], in_loop)
    if kind == "async":
        return run_async(node[1], in_loop)
    if kind == "thread":
        return in_thread(node[1], in_loop)
    if kind == "handoff":
        return finish_elsewhere(node[1], in_loop)
    raise AssertionError(kind)


def run_all(children, in_loop):
    ran.append("run_all")
    return tuple(run_node(child, in_loop) for child in children)


def plain(children, in_loop):
    ran.append("plain")
    return ("plain", run_all(children, in_loop))


def recurse(depth, children, in_loop):
    ran.append("recurse")
    if depth == 0:
        return run_all(children, in_loop)
    return ("r", recurse(depth - 1, children, in_loop))


def raise_after(children, in_loop):
    ran.append("raise_after")
    raise Boom(run_all(children, in_loop))


def catch(children, in_loop):
    ran.append("catch")
    try:
        return run_all(children, in_loop)
    except Boom as error:
        return ("caught", error.args[0])


def produce(count, children, in_loop):
    ran.append("produce")
    for i in range(count):
        yield (i, run_all(children, in_loop))


def consume(count, take, children, in_loop):
    ran.append("consume")
    items = produce(count, children, in_loop)
    out = []
    try:
        for item in items:
            if len(out) == take:
                break  # closes the generator early
            out.append(item)
    finally:
        items.close()
    return ("gen", tuple(out))


async def task_body(child):
    ran.append("task_body")
    await asyncio.sleep(0)
    result = run_node(child, True)
    await asyncio.sleep(0)
    return result


async def fan_out(children):
    ran.append("fan_out")
    results = await asyncio.gather(*(task_body(c) for c in children), return_exceptions=True)
    return tuple(("boom", r.args[0]) if isinstance(r, Boom) else r for r in results)


def relay(children, in_loop):
    ran.append("relay")
    yield run_all(children, in_loop)
    yield run_all(children, in_loop)


def start_relay(children, in_loop):
    ran.append("start_relay")
    items = relay(children, in_loop)
    first = next(items)  # the generator outlives this call: its first consumer
    return first, items


def finish_elsewhere(children, in_loop):
    ran.append("finish_elsewhere")
    first, items = start_relay(children, in_loop)
    return ("handoff", first, tuple(items))


def run_async(children, in_loop):
    ran.append("run_async")
    if in_loop:  # a loop runs on this thread already: run a new one on a pool thread
        with ThreadPoolExecutor(max_workers=1) as pool:
            return ("async", pool.submit(asyncio.run, fan_out(children)).result())
    return ("async", asyncio.run(fan_out(children)))


def in_thread(children, in_loop):
    ran.append("in_thread")
    box = []

    def body():
        ran.append("body")
        try:
            box.append(run_all(children, False))
        except Boom as error:
            box.append(("boom", error.args[0]))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return ("thread", box[0])


def program(tree):
    ran.append("program")
    try:
        return run_node(tree, False)
    except Boom as error:
        return ("escaped", error.args[0])


# --- generated shapes ------------------------------------------------------------------------
leaves = st.tuples(st.just("leaf"), st.integers(0, 9))


def _extend(inner):
    kids = st.lists(inner, max_size=3)
    return st.one_of(
        st.tuples(st.just("plain"), kids),
        st.tuples(st.just("recurse"), st.integers(0, 4), kids),
        st.tuples(st.just("raise"), kids),
        st.tuples(st.just("catch"), kids),
        st.tuples(st.just("gen"), st.integers(0, 3), st.integers(0, 4), kids),
        st.tuples(st.just("async"), st.lists(inner, min_size=1, max_size=3)),
        st.tuples(st.just("thread"), kids),
        st.tuples(st.just("handoff"), kids),
    )


programs = st.recursive(leaves, _extend, max_leaves=10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_generated_call_shapes_keep_the_invariants(tree):
    expected = program(tree)  # untraced
    ran.clear()
    s, order = ordered_session()
    with s:
        result = program(tree)
    assert result == expected
    events = s.events
    # a generator may outlive the call that first advanced it (documented in handoff.py)
    check_well_formed(events, outliving={"relay"})
    check_children_reported_first(events, order, outliving={"relay"})
    recorded = Counter(short(e.func_name) for e in events)
    assert recorded == Counter(ran)
    roots = [e for e in events if e.parent_id is None]
    assert [short(e.func_name) for e in roots] == ["program"]
    for e in events:
        if short(e.func_name) == "raise_after":
            assert e.status == "raised" and e.exc_type == "Boom"
