"""User code only: what is left out by default, include/exclude patterns (API and environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from samples import shapes
from samples.pkg import models

import flowtrace_otel
from flowtrace_otel import TraceSession, session
from flowtrace_otel.filters import CodeFilter, module_name_for

SAMPLES = Path(shapes.__file__).parent


def names(events) -> list[str]:
    return [e.func_name for e in events]


def user_default(value):
    return shapes.double(len(value))


def call_stdlib() -> str:
    return json.dumps({"a": {1, 2}}, default=user_default)


def call_site_packages() -> str:
    return yaml.safe_dump({"a": [1, 2]}, default_flow_style=True)


def test_stdlib_frames_are_left_out_and_callbacks_hang_under_the_caller() -> None:
    with TraceSession() as recorder:
        call_stdlib()
    assert names(recorder.events) == ["call_stdlib", "user_default", "double"]
    by_name = {e.func_name: e for e in recorder.events}
    assert by_name["user_default"].parent_id == by_name["call_stdlib"].id


def test_site_packages_are_left_out() -> None:
    assert "site-packages" in yaml.__file__
    with TraceSession() as recorder:
        call_site_packages()
    assert names(recorder.events) == ["call_site_packages"]


def test_this_package_is_left_out() -> None:
    with TraceSession() as recorder:
        flowtrace_otel.get_config()
        shapes.double(1)
    assert names(recorder.events) == ["double"]
    assert not any(e.module.startswith("flowtrace_otel") for e in recorder.events)


def test_module_level_code_is_left_out_but_its_calls_are_shown() -> None:
    sys.modules.pop("samples.import_time", None)
    with TraceSession() as recorder:
        import samples.import_time  # noqa: F401
    assert names(recorder.events) == ["double"]
    assert recorder.events[0].parent_id is None


def test_class_bodies_are_not_calls() -> None:
    def define():
        class Local:
            size = shapes.double(2)

            def method(self):
                return self.size

        return Local().method()

    with TraceSession() as recorder:
        define()
    assert names(recorder.events) == [
        "test_class_bodies_are_not_calls.<locals>.define",
        "double",
        "test_class_bodies_are_not_calls.<locals>.define.<locals>.Local.method",
    ]
    assert recorder.events[1].parent_id == recorder.events[0].id


def test_include_module_pattern_covers_submodules() -> None:
    with TraceSession(include=("samples.pkg",)) as recorder:
        models.build(2)
    assert names(recorder.events) == ["build"]
    with TraceSession(include=["samples"]) as recorder:
        models.build(2)
    assert names(recorder.events) == ["build", "double"]


def test_include_module_glob() -> None:
    with TraceSession(include="samples.sha*") as recorder:
        models.build(2)
    assert names(recorder.events) == ["double"]


def test_include_path_glob() -> None:
    with TraceSession(include=("*/samples/pkg/*.py",)) as recorder:
        models.build(2)
    assert names(recorder.events) == ["build"]
    with TraceSession(include=("samples/shapes.py",)) as recorder:  # relative tail of the path
        models.build(2)
    assert names(recorder.events) == ["double"]


def test_include_can_select_library_code() -> None:
    with TraceSession(include=("json",)) as recorder:
        call_stdlib()
    assert names(recorder.events)[0] == "dumps"
    assert all(e.module.startswith("json") for e in recorder.events)


def test_exclude_patterns_win_and_children_move_up() -> None:
    with TraceSession(exclude=("samples.pkg.*",)) as recorder:
        models.build(2)
    assert names(recorder.events) == ["double"]
    assert recorder.events[0].parent_id is None
    with TraceSession(include=("samples",), exclude=(str(SAMPLES / "shapes.py"),)) as recorder:
        models.build(2)
    assert names(recorder.events) == ["build"]


def test_patterns_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWTRACE_OTEL_INCLUDE", " samples.pkg , samples.shapes ,")
    monkeypatch.setenv("FLOWTRACE_OTEL_EXCLUDE", "samples.shapes")
    session.reset_config()
    assert flowtrace_otel.get_config()["include"] == ("samples.pkg", "samples.shapes")
    with TraceSession() as recorder:
        models.build(2)
        call_stdlib()
    assert names(recorder.events) == ["build"]


def test_api_options_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWTRACE_OTEL_EXCLUDE", "samples.*")
    session.reset_config()
    with TraceSession(exclude=()) as recorder:
        models.build(2)
    assert names(recorder.events) == ["build", "double"]


def test_environment_is_read_at_import(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent("""\
        import flowtrace_otel
        def keep(): return 1
        def drop(): return keep()
        flowtrace_otel.start_tracing()
        drop()
        print([e.func_name for e in flowtrace_otel.stop_tracing()])
    """))
    env = {**os.environ, "FLOWTRACE_OTEL_EXCLUDE": "*/app.py", "FLOWTRACE_OTEL_INCLUDE": ""}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, "[]\n")
    assert done.stderr == ("flowtrace_otel: no calls recorded: every function of your code that "
                           "ran matched exclude '*/app.py'\n")


# --- the decision itself ------------------------------------------------------------------------

def genexpr_code():
    return next(c for c in shapes.with_comprehensions.__code__.co_consts
                if hasattr(c, "co_name") and c.co_name == "<genexpr>")


@pytest.mark.parametrize(("code", "expected"), [
    (shapes.double.__code__, True),
    (shapes.Store.save.__code__, True),
    (json.dumps.__code__, False),                                  # stdlib
    (pytest.fixture.__code__, False),                              # site-packages
    (flowtrace_otel.get_config.__code__, False),                   # this package
    (compile("x = 1", str(SAMPLES / "shapes.py"), "exec"), False),  # <module>
    (compile("def f(): pass", "<string>", "exec"), False),         # generated
], ids=["user", "method", "stdlib", "site-packages", "flowtrace_otel", "module", "generated"])
def test_default_decision(code, expected) -> None:
    assert CodeFilter().is_user_code(code) is expected


def test_generator_expressions_are_filtered() -> None:
    assert CodeFilter().is_user_code(genexpr_code()) is False
    assert CodeFilter(include=("samples",)).is_user_code(genexpr_code()) is False


def test_comprehensions_have_no_frame_on_312() -> None:
    consts = [c.co_name for c in shapes.with_comprehensions.__code__.co_consts
              if hasattr(c, "co_name")]
    assert consts == ["<genexpr>"]  # list/dict/set comprehensions are inlined (PEP 709)


def test_module_names_run_no_code_of_objects_in_sys_modules(monkeypatch, tmp_path) -> None:
    asked: list[str] = []

    class LazyProxy:
        def __getattr__(self, name):
            asked.append(name)
            raise AttributeError(name)

        def __getattribute__(self, name):
            asked.append(name)
            return object.__getattribute__(self, name)

    monkeypatch.setitem(sys.modules, "lazy_proxy_for_test", LazyProxy())
    monkeypatch.setattr(sys, "path", [b"/bytes/entry", Path("/a/path/object"), *sys.path])
    fresh = tmp_path / "fresh_module_xyz.py"
    assert module_name_for(str(fresh)) == "fresh_module_xyz"
    assert asked == []


def test_module_name_for() -> None:
    assert module_name_for(shapes.__file__) == "samples.shapes"
    assert module_name_for(str(SAMPLES / "pkg" / "__init__.py")) == "samples.pkg"
    assert module_name_for(json.__file__) == "json"
    assert module_name_for("/nowhere/at/all/thing.py") == "thing"
