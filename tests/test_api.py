"""FlowTrace's API: start/stop, TraceSession, nesting, @trace, config, JSON, tree, tool ids."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import masked
from samples import shapes

import flowtrace_otel
from flowtrace_otel import (
    CallEvent,
    TraceSession,
    TracingConflict,
    active_tracing,
    config,
    get_config,
    get_trace_data,
    start_tracing,
    stop_tracing,
    trace,
)
from flowtrace_otel.formatters import format_tree, print_tree, to_json, write_json
from flowtrace_otel.session import registry


def names(events: list[CallEvent]) -> list[str]:
    return [e.func_name for e in events]


# --- start / stop -----------------------------------------------------------------------------

def test_start_stop_returns_call_events() -> None:
    start_tracing()
    shapes.fib(2)
    events = stop_tracing()
    assert names(events) == ["fib", "fib", "fib"]
    assert all(isinstance(e, CallEvent) for e in events)
    assert flowtrace_otel.CallEvent is CallEvent
    assert not registry.active()


def test_flowtrace_names_are_importable_from_the_package() -> None:
    from flowtrace_otel import formatters

    for name in ("trace", "config", "get_config", "start_tracing", "stop_tracing",
                 "get_trace_data", "active_tracing", "TraceSession", "CallEvent", "print_tree",
                 "format_tree", "to_json"):
        assert name in flowtrace_otel.__all__ and hasattr(flowtrace_otel, name), name
    assert flowtrace_otel.print_tree is formatters.print_tree


def test_stop_without_start_returns_nothing() -> None:
    assert stop_tracing() == []


def test_start_twice_is_an_error_and_keeps_the_first() -> None:
    start_tracing()
    with pytest.raises(RuntimeError, match="already started"):
        start_tracing()
    shapes.double(1)
    assert names(stop_tracing()) == ["double"]


def test_repeated_start_stop_frees_the_tool_id_each_time() -> None:
    for round_ in range(5):
        start_tracing()
        tool_id = registry.monitor.tool_id  # type: ignore[union-attr]
        assert sys.monitoring.get_tool(tool_id) == "flowtrace_otel"
        shapes.double(round_)
        events = stop_tracing()
        assert [e.args_repr for e in events] == [str(round_)]
        assert sys.monitoring.get_tool(tool_id) is None
    assert not registry.active()


def test_changed_filter_sees_code_the_previous_filter_left_out() -> None:
    with TraceSession(exclude=("samples.shapes",)) as left_out:
        shapes.fib(2)
    assert left_out.events == []
    with TraceSession() as default:
        shapes.fib(2)
    assert names(default.events) == ["fib"] * 3


def test_trace_session_context_manager() -> None:
    with TraceSession() as session:
        assert session.active
        shapes.outer(1)
    assert not session.active
    assert names(session.events) == ["outer", "outer.<locals>.inner", "outer.<locals>.inner"]
    assert session.stop() is session.events  # stopping again changes nothing


def test_trace_session_stops_when_the_block_raises() -> None:
    with pytest.raises(ValueError, match="boom"), TraceSession() as session:
        shapes.propagates()
    assert not registry.active()
    assert names(session.events) == ["propagates", "fail"]


def test_a_session_cannot_start_twice() -> None:
    session = TraceSession().start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            session.start()
    finally:
        session.stop()


def test_get_trace_data_is_the_last_stopped_session() -> None:
    with TraceSession():
        shapes.double(3)
    data = get_trace_data()
    assert [e.args_repr for e in data] == ["3"]
    data.clear()
    assert len(get_trace_data()) == 1  # a copy


def test_get_trace_data_while_tracing_shows_the_calls_so_far() -> None:
    with TraceSession():
        shapes.double(1)
    start_tracing()
    shapes.double(2)
    so_far = get_trace_data()
    shapes.double(3)
    assert [e.args_repr for e in so_far] == ["2"]
    assert [e.args_repr for e in get_trace_data()] == ["2", "3"]
    assert [e.args_repr for e in stop_tracing()] == ["2", "3"]
    assert [e.args_repr for e in get_trace_data()] == ["2", "3"]


def test_active_tracing_yields_the_session() -> None:
    with active_tracing() as session:
        assert isinstance(session, TraceSession) and session.active
        shapes.double(4)
    assert [e.args_repr for e in session.events] == ["4"]


# --- a second session while one runs: they nest and share the monitor ---------------------------

def test_sessions_nest_and_share_the_monitor() -> None:
    outer = TraceSession().start()
    shapes.double(1)
    inner = TraceSession().start()
    assert registry.monitor is not None and len(registry.consumers) == 2
    shapes.double(2)
    inner_events = inner.stop()
    shapes.double(3)
    outer_events = outer.stop()
    assert [e.args_repr for e in inner_events] == ["2"]
    assert [e.args_repr for e in outer_events] == ["1", "2", "3"]
    assert not registry.active()


def test_outer_session_may_stop_first() -> None:
    outer = TraceSession().start()
    inner = TraceSession().start()
    shapes.double(1)
    outer.stop()
    shapes.double(2)
    assert [e.args_repr for e in inner.stop()] == ["1", "2"]
    assert [e.args_repr for e in outer.events] == ["1"]


def test_display_options_may_differ_between_nested_sessions() -> None:
    with TraceSession(show_result=False), TraceSession(show_timing=False) as inner:
        shapes.double(1)
    assert len(inner.events) == 1


def test_different_monitor_options_coexist_and_a_third_set_conflicts_naming_them() -> None:
    with TraceSession(max_repr=30) as outer, TraceSession(max_repr=10, exclude=("x",)) as other:
        with pytest.raises(TracingConflict) as info:
            TraceSession(max_items=3).start()
        message = str(info.value)
        assert "max_items" in message and "capture_args" not in message
        assert len(registry.consumers) == 2  # nothing attached
        shapes.double(1)
    assert len(outer.events) == 1 and len(other.events) == 1


def test_start_tracing_beside_a_session_with_other_options() -> None:
    with TraceSession(capture_args=False) as session:
        start_tracing()
        shapes.double(1)
        events = stop_tracing()
    assert [e.args_repr for e in events] == ["1"]
    assert [e.args_repr for e in session.events] == [""]


# --- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: start_tracing(unknown_option=1),
    lambda: TraceSession(unknown_option=1),
    lambda: config(unknown_option=1),
    lambda: trace(unknown_option=1),
    lambda: active_tracing(unknown_option=1).__enter__(),
])
def test_unknown_option_is_a_type_error_naming_it(call) -> None:
    with pytest.raises(TypeError, match="unknown_option"):
        call()
    assert not registry.active()


def test_config_changes_later_sessions_and_get_config_shows_it() -> None:
    before = get_config()
    assert before["max_repr"] == 80 and before["show_timing"] is True
    config(max_repr=12, include=["samples"])
    after = get_config()
    assert after["max_repr"] == 12 and after["include"] == ("samples",)
    assert set(after) == set(before)
    with TraceSession() as session:
        shapes.double("x" * 50)
    assert session.events[0].args_repr == "'xxxxxxxxxx…"
    assert len(session.events[0].args_repr) == 12


def test_get_config_is_a_copy() -> None:
    get_config()["max_repr"] = 1
    assert get_config()["max_repr"] == 80


def test_session_options_override_config() -> None:
    config(capture_args=False)
    with TraceSession(capture_args=True) as session:
        shapes.double(7)
    assert session.events[0].args_repr == "7"


# --- @trace -------------------------------------------------------------------------------------

def test_trace_without_parentheses(capsys) -> None:
    @trace
    def compute(n):
        """Doc."""
        return shapes.fib(n)

    assert compute(2) == 1
    assert compute.__name__ == "compute" and compute.__doc__ == "Doc."
    assert compute.__wrapped__.__name__ == "compute"
    assert compute.__wrapped__ is not compute
    captured = capsys.readouterr()
    assert captured.out == ""
    assert masked(captured.err) == textwrap.dedent("""\
        → test_trace_without_parentheses.<locals>.compute(2)
          → fib(2)
            → fib(1) → 1 [..s]
            → fib(0) → 0 [..s]
          ← fib(2) → 1 [..s]
        ← test_trace_without_parentheses.<locals>.compute(2) → 1 [..s]
    """)  # @trace shows results by default (show_result=True), print_tree does not


def test_trace_with_options(capsys) -> None:
    @trace(show_result=False, show_timing=False)
    def compute(n):
        return shapes.double(n)

    assert compute(3) == 6
    assert capsys.readouterr().err == textwrap.dedent("""\
        → test_trace_with_options.<locals>.compute(3)
          → double(3)
        ← test_trace_with_options.<locals>.compute(3)
    """)


def test_trace_keeps_the_exception(capsys) -> None:
    error = ValueError("mine")

    @trace(show_timing=False)
    def explode():
        raise error

    with pytest.raises(ValueError) as info:
        explode()
    assert info.value is error
    err = capsys.readouterr().err
    assert "raised ValueError: mine [propagated]" in err
    assert not registry.active()


def test_trace_wrapped_is_the_original_function() -> None:
    def plain(x):
        return x

    decorated = trace(plain)
    assert decorated.__wrapped__ is plain
    assert trace()(plain).__wrapped__ is plain


def test_trace_async_function(capsys) -> None:
    @trace(show_timing=False, show_result=False)
    async def fetch(n):
        await asyncio.sleep(0)
        return shapes.double(n)

    assert asyncio.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(5)) == 10
    assert fetch.__name__ == "fetch"
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "→ test_trace_async_function.<locals>.fetch(5)"
    assert "  → double(5)" in err.splitlines()


def test_trace_generator_function(capsys) -> None:
    @trace(show_timing=False, show_result=False)
    def produce(n):
        for i in range(n):
            yield shapes.double(i)

    assert list(produce(2)) == [0, 2]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "→ test_trace_generator_function.<locals>.produce(2)"
    assert err[1:3] == ["  → double(0)", "  → double(1)"]

    import inspect

    @trace
    def echo():
        received = yield "ready"
        while True:
            received = yield f"got {received}"

    assert inspect.isgeneratorfunction(echo)
    gen = echo()
    assert (next(gen), gen.send(1), gen.send(2)) == ("ready", "got 1", "got 2")
    gen.close()
    assert not registry.active()
    assert "[closed]" in capsys.readouterr().err


def test_trace_async_generator_function(capsys) -> None:
    import inspect

    @trace(show_timing=False, show_result=False)
    async def numbers(n):
        total = 0
        for i in range(n):
            try:
                got = yield shapes.double(i)
            except KeyError:
                got = 100
            total += got or 0
        yield total

    assert inspect.isasyncgenfunction(numbers) and numbers.__name__ == "numbers"

    async def consume():
        gen = numbers(3)
        first = await gen.__anext__()
        second = await gen.asend(5)
        third = await gen.athrow(KeyError("k"))
        rest = [item async for item in gen]
        closed = numbers(5)
        await closed.__anext__()
        await closed.aclose()
        return first, second, third, rest

    assert asyncio.run(consume()) == (0, 2, 4, [105])
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "→ test_trace_async_generator_function.<locals>.numbers(3)"
    assert err[1:4] == ["  → double(0)", "  → double(1)", "  → double(2)"]
    assert err[5] == "→ test_trace_async_generator_function.<locals>.numbers(5)"
    assert not registry.active()


def test_trace_above_staticmethod_and_classmethod(capsys) -> None:
    class Tool:
        @trace(show_timing=False)
        @staticmethod
        def twice(x):
            return shapes.double(x)

        @trace(show_timing=False)
        @classmethod
        def make(cls, x):
            return cls, x

    assert Tool.twice(2) == 4 and Tool().twice(3) == 6
    assert Tool.make(1) == (Tool, 1) and Tool().make(2) == (Tool, 2)
    err = capsys.readouterr().err
    assert "Tool.twice(3)" in err and "  → double(3) → 6" in err
    assert "Tool.make(<class" in err


def test_trace_inside_an_active_session_runs_untouched(capsys) -> None:
    @trace
    def compute(n):
        return shapes.double(n)

    with TraceSession() as session:
        assert compute(1) == 2
    assert capsys.readouterr().err == ""
    assert names(session.events)[-1] == "double"


def test_recursive_traced_function_prints_one_tree(capsys) -> None:
    @trace(show_timing=False, show_result=False)
    def countdown(n):
        return n if n == 0 else countdown(n - 1)

    assert countdown(2) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 5 and err.startswith("→ test_recursive")


# --- JSON and print_tree ------------------------------------------------------------------------

def test_to_json_and_file(tmp_path: Path, traced) -> None:
    events = traced(shapes.catches)
    data = json.loads(to_json(events))
    assert [d["func_name"] for d in data] == ["catches", "fail"]
    first = data[1]
    for key in ("id", "parent_id", "func_name", "module", "file", "line", "args_repr",
                "result_repr", "exc_type", "exc_msg", "exc_state", "start_ns", "end_ns",
                "duration", "thread_id", "thread_name"):
        assert key in first
    assert (first["exc_type"], first["exc_state"], first["parent_id"]) == (
        "ValueError", "caught", data[0]["id"])
    path = tmp_path / "out.json"
    assert to_json(events, path) == path.read_text(encoding="utf-8").rstrip("\n")
    write_json(events, tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == data


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_print_tree_colour_only_on_a_tty(traced, monkeypatch) -> None:
    events = traced(shapes.fib, 1)
    tty, plain = _Tty(), io.StringIO()
    print_tree(events, file=tty)
    print_tree(events, file=plain)
    assert "\033[" in tty.getvalue()
    assert "\033[" not in plain.getvalue()
    assert masked(plain.getvalue()) == "→ fib(1) [..s]\n"
    monkeypatch.setenv("NO_COLOR", "1")
    no_color = _Tty()
    print_tree(events, file=no_color, links=False)  # a terminal's file:line: tests/test_links.py
    assert masked(no_color.getvalue()) == masked(plain.getvalue())


def test_empty_no_color_does_not_disable_colour(traced, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "")  # no-color.org: only a non-empty value counts
    tty = _Tty()
    print_tree(traced(shapes.fib, 1), file=tty)
    assert "\033[" in tty.getvalue()


def test_print_tree_defaults_to_stdout(traced, capsys) -> None:
    print_tree(traced(shapes.fib, 1))
    assert masked(capsys.readouterr().out) == "→ fib(1) [..s]\n"


def test_format_tree_shows_threads_where_they_change() -> None:
    import threading

    def spawn() -> None:
        worker = threading.Thread(target=shapes.double, args=(1,), name="worker-1")
        worker.start()
        worker.join()

    with TraceSession() as session:
        spawn()
    text = format_tree(session.events, show_timing=False)
    assert "  → double(1) {thread worker-1}" in text.splitlines()


# --- tool ids -----------------------------------------------------------------------------------

TOOL_IDS_TAKEN = textwrap.dedent("""\
    import sys, warnings
    M = sys.monitoring
    M.use_tool_id(3, "debugger-x")
    M.use_tool_id(4, "profiler-y")
    import flowtrace_otel
    from flowtrace_otel.session import registry
    try:
        flowtrace_otel.start_tracing()
    except flowtrace_otel.ToolIdTaken as error:
        print("ERROR", error)
    print("active", registry.active(), registry.consumers)
    print("holders", M.get_tool(3), M.get_tool(4))
    print("stop", flowtrace_otel.stop_tracing())

    @flowtrace_otel.trace
    def f(x):
        return x + 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print("decorated", f(1), f(2))
    print("warnings", len(caught), caught[0].message if caught else None)
    M.free_tool_id(4)
    with flowtrace_otel.TraceSession() as s:
        f(3)
    print("after free", [e.func_name for e in s.events], M.get_tool(4))
""")


def test_tool_ids_taken_raises_naming_the_holders_and_changes_nothing(tmp_path: Path) -> None:
    script = tmp_path / "taken.py"
    script.write_text(TOOL_IDS_TAKEN)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ERROR ")
    assert "'debugger-x'" in lines[0] and "'profiler-y'" in lines[0]
    assert lines[1:4] == ["active False []", "holders debugger-x profiler-y", "stop []"]
    assert lines[4] == "decorated 2 3"  # @trace runs the function untraced
    assert lines[5].startswith("warnings 1 flowtrace_otel: @trace runs untraced")
    assert lines[6] == "after free ['f'] None"
