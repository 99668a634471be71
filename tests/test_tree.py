"""The call tree's shapes, traced for real on tests/samples/shapes.py.

Decisions shown here (and documented in flowtrace_otel/filters.py and formatters.py):
methods, static and class methods show their qualified name; nested functions and lambdas
show ``outer.<locals>.inner`` / ``f.<locals>.<lambda>``; list/dict/set comprehensions have no
frame of their own on 3.12+ (PEP 709) and generator expressions are filtered, so the calls made
inside either show directly under the function that contains them.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import masked
from samples import shapes

from flowtrace_otel import TraceSession, start_tracing, stop_tracing
from flowtrace_otel.formatters import format_tree

SEED_TREE = """\
→ fib(3)
  → fib(2)
    → fib(1) [..s]
    → fib(0) [..s]
  ← fib(2) [..s]
  → fib(1) [..s]
← fib(3) [..s]
"""


def test_seed_example_prints_the_seeds_tree(tmp_path: Path) -> None:
    script = tmp_path / "seed.py"
    script.write_text(textwrap.dedent("""\
        from flowtrace_otel import start_tracing, stop_tracing
        from flowtrace_otel.formatters import print_tree

        def fib(n):
            return n if n <= 1 else fib(n-1) + fib(n-2)

        start_tracing()
        fib(3)
        events = stop_tracing()

        print_tree(events)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert masked(done.stdout) == SEED_TREE
    assert done.stderr == ""


def test_seed_durations_are_real_and_nested(traced) -> None:
    events = traced(shapes.fib, 3)
    by_id = {e.id: e for e in events}
    assert [e.func_name for e in events] == ["fib"] * 5
    for event in events:
        assert event.end_ns >= event.start_ns > 0
        assert event.duration == (event.end_ns - event.start_ns) / 1e9
        if event.parent_id is not None:
            parent = by_id[event.parent_id]
            assert parent.start_ns <= event.start_ns <= event.end_ns <= parent.end_ns
    assert [e.args_repr for e in events] == ["3", "2", "1", "0", "1"]


def test_arguments_are_shown_in_call_order(traced) -> None:
    events = traced(lambda: (shapes.signature(1, 2, 3, c=5, e=6), shapes.signature(1, 2, c=5)))
    assert [e.args_repr for e in events[1:]] == [
        "1, 2, *(3,), c=5, d=4, **{'e': 6}", "1, 2, c=5, d=4"]
    assert [(name, kind) for name, _, kind in events[1].args] == [
        ("a", "p"), ("b", "p"), ("c", "k"), ("d", "k"), ("args", "*"), ("kw", "**")]


def test_results_shown_on_request(tree) -> None:
    assert tree(shapes.fib, 2, show_result=True, show_timing=False) == (
        "→ fib(2)\n  → fib(1) → 1\n  → fib(0) → 0\n← fib(2) → 1\n")


def test_methods_static_and_class_methods(tree) -> None:
    def use_store() -> None:
        store = shapes.Store.create("main")
        store.save("key", {"a": 1})
        shapes.Store.helper(21)

    assert tree(use_store, show_timing=False) == textwrap.dedent("""\
        → test_methods_static_and_class_methods.<locals>.use_store()
          → Store.create(<class Store>, 'main')
            → Store.__init__(<Store>, 'main')
          ← Store.create(<class Store>, 'main')
          → Store.save(<Store>, 'key', {'a': 1})
            → Store._check(<Store>, 'key')
          ← Store.save(<Store>, 'key', {'a': 1})
          → Store.helper(21)
        ← test_methods_static_and_class_methods.<locals>.use_store()
    """)


def test_nested_functions(tree) -> None:
    assert tree(shapes.outer, 1, show_timing=False, show_result=True) == textwrap.dedent("""\
        → outer(1)
          → outer.<locals>.inner(1) → 2
          → outer.<locals>.inner(2) → 3
        ← outer(1) → 5
    """)


def test_lambdas(tree) -> None:
    assert tree(shapes.with_lambda, [1, 2], show_timing=False) == textwrap.dedent("""\
        → with_lambda([1, 2])
          → with_lambda.<locals>.<lambda>(1)
          → with_lambda.<locals>.<lambda>(2)
        ← with_lambda([1, 2])
    """)


def test_comprehensions_show_their_calls_under_the_function(traced) -> None:
    events = traced(shapes.with_comprehensions, 2)
    names = [e.func_name for e in events]
    assert names == ["with_comprehensions"] + ["double"] * 8  # list, dict, set, genexpr
    root = events[0]
    assert all(e.parent_id == root.id for e in events[1:])
    assert not any("<" in name for name in names)  # no <listcomp>, <genexpr> frames


def test_generator_function_shows_its_calls_and_resumes(tree) -> None:
    assert tree(shapes.consume, 2, show_timing=False) == textwrap.dedent("""\
        → consume(2)
          → gen(2)
            → double(0)
            → double(1)
          ← gen(2) (resumed 2×)
        ← consume(2)
    """)


def test_exception_caught_by_the_caller(traced) -> None:
    events = traced(shapes.catches)
    fail = events[1]
    assert (fail.func_name, fail.exc_type, fail.exc_msg, fail.exc_state, fail.status) == (
        "fail", "ValueError", "handled", "caught", "raised")
    assert events[0].exc_type is None and events[0].status == "returned"
    assert events[0].result_repr == "'recovered'"
    text = masked(format_tree(events, show_timing=False))
    assert "→ fail('handled') raised ValueError: handled [caught]" in text


def test_exception_propagated_to_the_top(traced) -> None:
    events = traced(shapes.propagates, raises=ValueError)
    assert [(e.func_name, e.exc_state, e.status) for e in events] == [
        ("propagates", "propagated", "raised"), ("fail", "propagated", "raised")]
    assert format_tree(events, show_timing=False) == textwrap.dedent("""\
        → propagates()
          → fail('boom') raised ValueError: boom [propagated]
        ← propagates() raised ValueError: boom [propagated]
    """)


def test_exception_raised_and_handled_inside_one_call(traced) -> None:
    [event] = traced(shapes.catches_inside)
    assert event.exc_type is None and event.status == "returned"
    assert event.caught == [("KeyError", "'k'")]


def test_exception_caught_two_levels_up(traced) -> None:
    text = format_tree(traced(shapes.catches_deep), show_timing=False)
    assert text == textwrap.dedent("""\
        → catches_deep()
          → middle()
            → fail('deep') raised ValueError: deep [propagated]
          ← middle() raised ValueError: deep [caught]
        ← catches_deep()
    """)


def test_exception_translated_into_another(traced) -> None:
    text = format_tree(traced(shapes.catches_translated), show_timing=False)
    assert text == textwrap.dedent("""\
        → catches_translated()
          → translates()
            → fail('inner') raised ValueError: inner [caught]
          ← translates() raised KeyError: 'outer' [caught]
        ← catches_translated()
    """)


def test_each_retry_is_a_caught_call(traced) -> None:
    events = traced(shapes.retries, 3)
    assert [(e.args_repr, e.exc_state) for e in events[1:]] == [
        ("'try 0'", "caught"), ("'try 1'", "caught"), ("'try 2'", "caught")]
    assert events[0].result_repr == "'gave up'"


@pytest.mark.parametrize("func", [shapes.only_finally, shapes.only_with, shapes.reraises],
                         ids=["finally", "with", "except-raise"])
def test_exception_seen_by_a_handler_that_lets_it_go_on_is_propagated(traced, func) -> None:
    events = traced(func, raises=ValueError)
    fail = next(e for e in events if e.func_name == "fail")
    assert (events[0].exc_state, fail.exc_state) == ("propagated", "propagated")


def test_exception_without_message(traced) -> None:
    def interrupt():
        raise KeyboardInterrupt

    def guard():
        try:
            interrupt()
        except KeyboardInterrupt:
            return "stopped"

    text = format_tree(traced(guard), show_timing=False)
    assert text.splitlines()[1] == "  → test_exception_without_message.<locals>.interrupt() " \
        "raised KeyboardInterrupt [caught]"


def test_show_exc_false_hides_exceptions(traced) -> None:
    events = traced(shapes.propagates, raises=ValueError)
    text = format_tree(events, show_exc=False, show_timing=False)
    assert "ValueError" not in text and "propagated" not in text


def test_show_args_false(traced) -> None:
    assert format_tree(traced(shapes.fib, 1), show_args=False, show_timing=False) == "→ fib()\n"


def test_tracing_started_inside_a_running_function() -> None:
    def work() -> list:
        start_tracing()
        shapes.fib(2)
        return stop_tracing()

    events = work()  # work's own return is not seen as a call: it started before tracing
    assert [e.func_name for e in events] == ["fib", "fib", "fib"]
    assert all(e.status == "returned" for e in events)


def test_tracing_started_deep_in_recursion_has_no_unmatched_returns() -> None:
    box: dict[str, TraceSession] = {}

    def dive(n: int) -> int:
        if n == 3:
            box["session"] = TraceSession().start()
        return 0 if n == 0 else dive(n - 1) + 1

    assert dive(5) == 5  # frames 5, 4, 3 started before tracing: their returns are ignored
    events = box["session"].stop()
    assert [(e.func_name.rsplit(".", 1)[-1], e.args_repr, e.status) for e in events] == [
        ("dive", "2", "returned"), ("dive", "1", "returned"), ("dive", "0", "returned")]
    assert events[0].parent_id is None
    assert len(format_tree(events).splitlines()) == 5  # two opened, two closed, one leaf


def test_generator_started_before_tracing_resumed_inside_its_own_code(traced) -> None:
    older = shapes.walk(1)
    next(older)  # suspended before tracing starts

    def run() -> None:
        assert list(shapes.walk(2, older)) == [1, 4, 2]

    events = traced(run)
    assert [(e.func_name, e.args_repr, e.status) for e in events][1:] == [
        ("walk", "2, <generator>", "returned"), ("double", "2", "returned")]
    assert events[2].parent_id == events[1].id


def test_tracing_started_while_another_thread_is_inside_a_function() -> None:
    import threading

    started, go = threading.Event(), threading.Event()

    def worker() -> None:
        started.set()
        go.wait(timeout=60)
        shapes.double(5)

    thread = threading.Thread(target=worker, name="busy")
    thread.start()
    assert started.wait(timeout=60)
    with TraceSession() as session:
        go.set()
        thread.join(timeout=60)
    assert [(e.func_name, e.thread_name, e.parent_id, e.status) for e in session.events] == [
        ("double", "busy", None, "returned")]  # worker's own return is not an unmatched event
    assert format_tree(session.events, show_timing=False) == "→ double(5) {thread busy}\n"


def test_tracing_stopped_inside_a_traced_call_marks_it_unfinished() -> None:
    def stopper() -> list:
        shapes.double(1)
        return stop_tracing()

    start_tracing()
    events = stopper()
    assert [(e.func_name.rsplit(".", 1)[-1], e.status) for e in events] == [
        ("stopper", "unfinished"), ("double", "returned")]
    assert "[unfinished]" in format_tree(events)


def test_events_are_in_start_order_with_parent_ids(traced) -> None:
    events = traced(shapes.fib, 3)
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[0].parent_id is None
    assert [e.parent_id for e in events[1:]] == [ids[0], ids[1], ids[1], ids[0]]


def test_event_location_fields(traced) -> None:
    [event] = traced(shapes.double, 2)
    assert event.module == "samples.shapes"
    assert event.file == shapes.__file__
    assert event.line == shapes.double.__code__.co_firstlineno
    assert event.thread_name == "MainThread" and event.task is None


def test_a_tree_deeper_than_the_recursion_limit(traced) -> None:
    [template] = traced(shapes.double, 1)
    depth = sys.getrecursionlimit() * 3
    chain = [dataclasses.replace(template, id=i + 1, parent_id=i or None) for i in range(depth)]
    lines = format_tree(chain, show_timing=False, max_lines=0).splitlines()
    assert len(lines) == 2 * depth - 1
    assert lines[depth - 1] == "  " * (depth - 1) + "→ double(1)"
    assert lines[-1] == "← double(1)"


def test_empty_tree() -> None:
    assert format_tree([]) == ""
