"""Generators in the core call tree: one call from first ``next()`` to exhaustion or close.

The calls a generator makes are its children; the calls its consumer makes between two
``next()`` are the consumer's. A generator closed early ends, also on 3.13 where closing a
suspended generator emits no event (cpython#140373), and one never finished ends when
tracing stops, as ``unfinished``.
"""

from __future__ import annotations

import gc
import sys

import pytest

from flowtrace_otel import TraceSession
from flowtrace_otel import monitoring as m
from tests._calltree import (
    check_children_reported_first,
    check_well_formed,
    children,
    named,
    one,
    ordered_session,
    parent_name,
    tree,
)

SILENT_CLOSE = sys.version_info >= (3, 13)


def leaf(x):
    return x


def count(n):
    for i in range(n):
        leaf(i)
        yield i


def consume_all():
    total = 0
    for v in count(3):
        total += leaf(v)
    return total


def test_generator_is_one_call_and_consumer_keeps_its_children():
    with TraceSession() as s:
        assert consume_all() == 3
    events = s.events
    check_well_formed(events)
    gen = one(events, "count")
    assert parent_name(events, gen) == "consume_all"
    assert gen.status == "returned"
    assert gen.resumes == 3  # resumed after each of its three yields
    assert gen.suspended_ns > 0
    assert [c.func_name for c in children(events, gen)] == ["leaf"] * 3
    consumer_leaves = [e for e in named(events, "leaf") if parent_name(events, e) == "consume_all"]
    assert len(consumer_leaves) == 3
    # the consumer's calls happen while the generator is suspended, inside its lifetime
    assert all(gen.start_ns < e.start_ns < gen.end_ns for e in consumer_leaves[:2])


def manual_next():
    g = count(5)
    a = next(g)
    leaf("between")
    b = next(g)
    rest = list(g)
    return a, b, rest


def test_calls_between_next_are_the_consumers():
    with TraceSession() as s:
        assert manual_next() == (0, 1, [2, 3, 4])
    events = s.events
    check_well_formed(events)
    between = [e for e in named(events, "leaf") if e.args_repr == "'between'"]
    assert len(between) == 1
    assert parent_name(events, between[0]) == "manual_next"
    assert len(children(events, one(events, "count"))) == 5


def echo():
    received = []
    try:
        while True:
            try:
                value = yield len(received)
                received.append(leaf(value))
            except KeyError:
                leaf("handled")
    finally:
        leaf("cleanup")


def drive_echo():
    g = echo()
    next(g)
    g.send("a")
    g.throw(KeyError("k"))
    g.send("b")
    g.close()
    return "done"


def test_send_throw_and_close():
    with TraceSession() as s:
        assert drive_echo() == "done"
    events = s.events
    check_well_formed(events)
    gen = one(events, "echo")
    assert parent_name(events, gen) == "drive_echo"
    # a generator with a handler around its yield is closed by throwing GeneratorExit into
    # it on every version: its cleanup runs as its own child
    assert gen.status == "closed"
    assert gen.exc_type is None
    assert gen.resumes == 3  # send, throw, send; not the close
    assert [c.args_repr for c in children(events, gen)] == ["'a'", "'handled'", "'b'",
                                                           "'cleanup'"]
    assert gen.caught and gen.caught[0][0] == "KeyError"


def fails():
    yield 1
    raise ValueError("bad item")


def catch_generator_error():
    try:
        for _ in fails():
            pass
    except ValueError:
        return "caught"
    return "no"


def test_generator_raising():
    with TraceSession() as s:
        assert catch_generator_error() == "caught"
    events = s.events
    check_well_formed(events)
    gen = one(events, "fails")
    assert gen.status == "raised"
    assert (gen.exc_type, gen.exc_msg) == ("ValueError", "bad item")
    assert gen.exc_state == "caught"


def inner_gen(n):
    for i in range(n):
        yield leaf(i)
    return "inner-done"


def outer_gen():
    result = yield from inner_gen(2)
    leaf(result)
    yield from inner_gen(1)


def use_yield_from():
    return list(outer_gen())


def test_yield_from():
    with TraceSession() as s:
        assert use_yield_from() == [0, 1, 0]
    events = s.events
    check_well_formed(events)
    outer = one(events, "outer_gen")
    assert parent_name(events, outer) == "use_yield_from"
    inners = named(events, "inner_gen")
    assert len(inners) == 2
    assert all(parent_name(events, e) == "outer_gen" for e in inners)
    assert all(e.status == "returned" for e in inners)
    assert [short.args_repr for short in children(events, inners[0])] == ["0", "1"]
    assert tree(events) == [
        ["use_yield_from", [
            ["outer_gen", [
                ["inner_gen", [["leaf", []], ["leaf", []]]],
                ["inner_gen", [["leaf", []]]],
                ["leaf", []],
            ]],
        ]],
    ]


def break_early():
    for v in count(10):
        if v == 1:
            break
    leaf("after")
    return v


def close_explicitly():
    g = count(10)
    next(g)
    g.close()
    leaf("after")


def drop_unfinished():
    g = count(10)
    next(g)
    del g
    gc.collect()
    leaf("after")


@pytest.mark.parametrize(("consumer", "resumes"),
                         [(break_early, 1), (close_explicitly, 0), (drop_unfinished, 0)])
def test_generator_closed_early_ends(consumer, resumes):
    s, order = ordered_session()
    with s:
        consumer()
    events = s.events
    check_well_formed(events)
    check_children_reported_first(events, order)  # found when the consumer ends, at the latest
    gen = one(events, "count")
    assert gen.status == "closed"
    assert gen.exc_type is None
    assert gen.resumes == resumes  # the close itself is not counted, on every version
    assert parent_name(events, gen) == consumer.__name__
    after = next(e for e in named(events, "leaf") if e.args_repr == "'after'")
    if not SILENT_CLOSE:
        assert gen.end_ns <= after.start_ns  # 3.12 reports the close as it happens
    # on 3.13 the close is found when the consumer ends; the generator ends at its last yield
    assert gen.end_ns <= one(events, consumer.__name__).end_ns


def keep_open():
    g = count(10)
    next(g)
    return g


def test_generator_never_finished_ends_when_tracing_stops():
    with TraceSession() as s:
        g = keep_open()
    events = s.events
    check_well_formed(events, unfinished={"count"}, outliving={"count"})
    gen = one(events, "count")
    assert gen.status == "unfinished"
    assert parent_name(events, gen) == "keep_open"
    assert next(g) == 1  # untouched by tracing: it still runs
    g.close()


def with_state(n):
    total = 0
    for i in range(n):
        total += i
        yield total


def start_it():
    g = with_state(5)
    next(g)
    return g


def finish_later():
    g = start_it()  # the starter ends while the generator is suspended
    leaf("in between")
    return list(g)


def test_generator_outliving_its_starter_keeps_running():
    """The 3.13 sweep at the starter's end probes the frame; it must not close or clear it."""
    with TraceSession() as s:
        assert finish_later() == [1, 3, 6, 10]
    events = s.events
    check_well_formed(events, outliving={"with_state"})
    gen = one(events, "with_state")
    assert parent_name(events, gen) == "start_it"
    assert gen.status == "returned"
    assert gen.end_ns > one(events, "start_it").end_ns


def close_later():
    g = start_it()
    next(g)
    g.close()  # silent on 3.13: the starter has already ended
    leaf("after close")


def test_generator_closed_after_its_starter_ended():
    s, order = ordered_session()
    with s:
        close_later()
    events = s.events
    check_well_formed(events, outliving={"with_state"})
    gen = one(events, "with_state")
    # reported before the open ancestor that swept it (close_later), not only at the stop
    assert order.index(gen.id) < order.index(one(events, "close_later").id)
    assert gen.status == "closed"
    assert parent_name(events, gen) == "start_it"
    assert gen.end_ns <= one(events, "close_later").end_ns


def test_root_level_generators_closed_silently_do_not_pile_up():
    """Generators with no traced caller: still ended, and the parked set stays bounded."""
    with TraceSession() as s:
        for _ in range(3 * m._ORPHAN_SWEEP_AT):
            g = count(10)
            next(g)
            del g
        monitor = s._monitor
        assert monitor is not None
        assert len(monitor.suspended) <= 2 * m._ORPHAN_SWEEP_AT + 1
    events = s.events
    check_well_formed(events)
    gens = named(events, "count")
    assert len(gens) == 3 * m._ORPHAN_SWEEP_AT
    assert all(e.status == "closed" and e.parent_id is None for e in gens)


def test_many_live_generators_under_one_starter():
    """Live generators handed up at their starter's end are neither closed nor lost."""
    def open_many():
        return [start_it() for _ in range(50)]

    def main():
        gens = open_many()
        return [list(g) for g in gens]

    with TraceSession() as s:
        assert main() == [[1, 3, 6, 10]] * 50
    events = s.events
    check_well_formed(events, outliving={"with_state"})
    gens = named(events, "with_state")
    assert len(gens) == 50
    assert all(e.status == "returned" for e in gens)
    assert {parent_name(events, e) for e in gens} == {"start_it"}


def forever():
    while True:
        yield 1


def spawn_live(keep):
    g = forever()
    next(g)
    keep.append(g)  # outlives this call: handed to the caller's sweep


def many_live_and_spawns(n_live, n_spawn):
    keep = []
    for _ in range(n_live):
        g = forever()
        next(g)
        keep.append(g)
    for _ in range(n_spawn):
        spawn_live(keep)
    return keep


class CountingDict(dict):
    """A dict that counts the entries its ``items()`` callers walk."""

    walked = 0

    def items(self):
        CountingDict.walked += len(self)
        return super().items()


def test_a_sweep_looks_only_at_the_ending_calls_generators(monkeypatch):
    """Each ending call sees its own parked generators, not every parked one (3.13 cost)."""
    probes = []
    real_probe = m._frame_finished
    real_init = m.Monitor.__init__

    def counting_probe(frame):
        probes.append(frame)
        return real_probe(frame)

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.suspended = CountingDict()

    monkeypatch.setattr(m, "_frame_finished", counting_probe)
    monkeypatch.setattr(m.Monitor, "__init__", init)
    CountingDict.walked = 0
    with TraceSession() as s:
        keep = many_live_and_spawns(300, 100)
        probed, walked = len(probes), CountingDict.walked
    # each spawn probes its own generator; the caller's end probes its 400 once, and hands
    # them to the orphans, swept once more since they passed the orphan limit: 900, where
    # looking at every parked generator at every end would be over 30,000
    assert probed <= 100 + 2 * 400
    assert walked <= 100 + 2 * 400
    events = s.events
    check_well_formed(events, unfinished={"forever"}, outliving={"forever"})
    assert len(named(events, "forever")) == 400
    assert all(e.status == "unfinished" for e in named(events, "forever"))
    del keep
