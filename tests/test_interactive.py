"""Interactive code is user code: ``python -c``, the REPLs, ``exec`` of a string, IPython.

The seed's example, typed where people explore code, prints the seed's tree; generated code
(dataclasses, namedtuple, code exec'd into a bare namespace) stays out, and stays collectable.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from _repl import type_into
from conftest import masked

from flowtrace_otel import TraceSession, start_tracing, stop_tracing
from flowtrace_otel.formatters import format_tree
from flowtrace_otel.monitoring import _TYPED_CACHED
from flowtrace_otel.session import registry

SEED_LINES = [
    "from flowtrace_otel import start_tracing, stop_tracing",
    "from flowtrace_otel.formatters import print_tree",
    "def fib(n): return n if n <= 1 else fib(n-1) + fib(n-2)",
    "",
    "start_tracing()",
    "fib(3)",
    "events = stop_tracing()",
    "print_tree(events)",
]
SEED = "\n".join(SEED_LINES) + "\n"
SEED_TREE = """\
→ fib(3)
  → fib(2)
    → fib(1) [..s]
    → fib(0) [..s]
  ← fib(2) [..s]
  → fib(1) [..s]
← fib(3) [..s]
"""
BIN = Path(sys.executable).parent


def env(**extra: str) -> dict[str, str]:
    """A clean environment: no tracer settings, no colour, plus ``extra``."""
    out = {k: v for k, v in os.environ.items()
           if k == "FLOWTRACE_OTEL_CORE"  # the core under test
           or not k.startswith(("FLOWTRACE_OTEL", "OTEL_", "PYTHON_BASIC_REPL", "PYTEST_"))}
    out.update(NO_COLOR="1", TERM="xterm", PYTHONIOENCODING="utf-8", **extra)
    return out


def shows_seed_tree(screen: str) -> bool:
    """True when the seed's tree appears, line for line, in what the user saw."""
    return SEED_TREE in masked(screen.replace("\r", ""))


def test_python_c_prints_the_seed_tree(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SEED], capture_output=True, text=True,
                          env=env(), cwd=tmp_path, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert masked(done.stdout) == SEED_TREE


def test_stdin_fed_to_the_interpreter(tmp_path: Path) -> None:
    """``python -i < file`` / a pipe: the basic REPL reading ``<stdin>``."""
    done = subprocess.run([sys.executable, "-i"], input=SEED, capture_output=True, text=True,
                          env=env(), cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # the prompt echoes start_tracing() and fib(3) (prompts themselves go to stderr)
    assert masked(done.stdout) == "<TraceSession: tracing, 0 calls so far>\n2\n" + SEED_TREE


def test_code_interact(tmp_path: Path) -> None:
    """``code.interact()``, the console that tools embed, runs its input as ``<console>``."""
    done = subprocess.run([sys.executable, "-c", "import code; code.interact()"], input=SEED,
                          capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert shows_seed_tree(done.stdout.replace(">>> ", "\n")), done.stdout  # input() prompts
    assert "<TraceSession: tracing, 0 calls so far>" in done.stdout


@pytest.mark.parametrize("repl", ["default", "basic"])
def test_repl_on_a_terminal(repl: str, tmp_path: Path) -> None:
    """Typed at the prompt of a real REPL (3.13: the new one, and PYTHON_BASIC_REPL=1)."""
    extra = {"PYTHON_BASIC_REPL": "1"} if repl == "basic" else {}
    screen = type_into([sys.executable], SEED_LINES, env(**extra), str(tmp_path))
    assert shows_seed_tree(screen), screen
    assert "<TraceSession: tracing, 0 calls so far>" in screen
    assert " object at 0x" not in screen


def test_exec_of_a_string_in_main_namespace() -> None:
    namespace = {"__name__": "__main__"}
    exec(compile(SEED, "<string>", "exec"), namespace)
    events = namespace["events"]
    assert masked(format_tree(events)) == SEED_TREE
    assert {e.module for e in events} == {"__main__"}


def test_exec_of_a_string_in_a_user_module() -> None:
    exec("def typed_here(x):\n    return x + 1\n", globals())
    with TraceSession() as session:
        typed_here(1)  # noqa: F821 - defined by the exec above
    assert [(e.func_name, e.module) for e in session.events] == [
        ("typed_here", __name__)]


@dataclasses.dataclass(order=True)
class Point:
    x: int
    y: int = 0


Pair = collections.namedtuple("Pair", "a b")


def test_generated_code_stays_out() -> None:
    """dataclasses' and namedtuple's methods, and code exec'd into a bare dict, are not calls."""
    bare: dict[str, object] = {}
    exec("def made(): return 1", bare)
    with TraceSession() as session:
        assert Point(1) < Point(2)
        assert Pair(1, 2).a == 1
        assert bare["made"]() == 1  # type: ignore[operator]
    assert session.events == []


@pytest.mark.parametrize(("options", "expected"), [
    ("include=('__main__',)", SEED_TREE), ("include=('elsewhere',)", ""),
    ("exclude=('__main__',)", ""),
])
def test_include_and_exclude_apply_to_typed_code(options: str, expected: str,
                                                 tmp_path: Path) -> None:
    """Typed code's module is ``__main__``: patterns match it like any module."""
    program = SEED.replace("start_tracing()", f"start_tracing({options})")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env=env(), cwd=tmp_path, timeout=60, check=False)
    assert masked(done.stdout) == expected, done.stderr


def test_typed_code_cache_is_bounded_and_lets_code_go() -> None:
    """Caching keeps a code object alive: only the latest typed/exec'd ones are cached."""
    namespace = {"__name__": "__main__"}
    exec("def first(): return 0", namespace)
    first_code = weakref.ref(namespace["first"].__code__)  # type: ignore[union-attr]
    with TraceSession() as session:
        namespace["first"]()  # type: ignore[operator]
        monitor = registry.monitor
        assert monitor is not None
        for i in range(_TYPED_CACHED * 3):
            made = {"__name__": "__main__"}
            exec(f"def made_{i}(): return {i}", made)
            made[f"made_{i}"]()  # type: ignore[operator]
        assert len(monitor.typed) <= _TYPED_CACHED
        assert len(monitor.infos) < _TYPED_CACHED + 100
    assert len(session.events) == 1 + _TYPED_CACHED * 3
    del namespace["first"]
    gc.collect()
    assert first_code() is None  # the events name the function, they do not keep its code


def test_start_tracing_echoes_a_short_state() -> None:
    session = start_tracing()
    assert repr(session) == "<TraceSession: tracing, 0 calls so far>"
    assert stop_tracing() == []
    assert repr(session) == "<TraceSession: stopped, 0 calls>"


IPYTHON = shutil.which("ipython", path=str(BIN))


def test_ipython_c_prints_the_seed_tree(tmp_path: Path) -> None:
    assert IPYTHON is not None, "ipython is in the test extra"
    done = subprocess.run([IPYTHON, "--no-banner", "-c", SEED], capture_output=True,
                          text=True, env=env(), cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert masked(done.stdout) == SEED_TREE


def test_ipython_cells_typed_at_the_prompt(tmp_path: Path) -> None:
    """One cell per line, as a person types them into a terminal IPython."""
    assert IPYTHON is not None
    cells = [line for line in SEED_LINES if line]
    screen = type_into([IPYTHON, "--simple-prompt", "--no-banner", "--colors=nocolor",
                        f"--ipython-dir={tmp_path}"], cells, env(), str(tmp_path),
                       prompt=b"In [")
    assert shows_seed_tree(screen), screen
    assert "<TraceSession: tracing, 0 calls so far>" in screen
    assert " object at 0x" not in screen
