"""Signals reach the program at once, traced or not (issue 12, item 1).

A Python callback is bytecode, so a signal handler often runs *inside* the tracer. Its
exception (Ctrl-C, a SIGALRM timeout, a handler's ``sys.exit``) is the program's and must
arrive in the program's code every time, not be contained as a tracer error. Each program
repeats the signal many times, at varying moments; the untraced run is checked first, so a
failure means the tracer, not the test.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowtrace_otel.interrupts import program_exception
from tests._programs import PY, clean_env, traceback_part

SAMPLE = Path(__file__).parent / "samples" / "interrupts.py"
TRACED_MODES = ("cli", "env", "session")


def _command(mode: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """Command line and environment that run the sample in ``mode``."""
    env = clean_env()
    cmd = [PY, SAMPLE.name, *args]
    if mode == "cli":
        cmd = [PY, "-m", "flowtrace_otel", "run", SAMPLE.name, *args]
    elif mode == "env":
        env.update(FLOWTRACE_OTEL="1", OTEL_TRACES_EXPORTER="none")
    elif mode == "session":
        env["FLOWTRACE_SAMPLE_SESSION"] = "1"
    return cmd, env


@pytest.fixture(autouse=True, scope="module")
def _sigint_as_on_a_terminal() -> Iterator[None]:
    """Children start with SIGINT at its default, as from a terminal.

    A shell that starts processes in the background (CI, ``cmd &``) makes them ignore SIGINT,
    and an ignored signal stays ignored across ``exec``: Python then installs no
    KeyboardInterrupt handler (``_thread.interrupt_main`` does nothing either). A handled one is
    reset to the default by ``exec``, so the test process handles it while these tests run. (Not
    a ``preexec_fn``: that makes ``subprocess`` fork the test process, whose gRPC receiver
    threads' fork handlers aborted a child before its ``exec``.)
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, previous)


def _run(mode: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the sample in ``mode`` from a copy of it in ``tmp_path``."""
    shutil.copy(SAMPLE, tmp_path / SAMPLE.name)
    cmd, env = _command(mode, *args)
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("kind", ["sigint", "alarm"])
@pytest.mark.parametrize("mode", TRACED_MODES)
def test_every_signal_exception_reaches_the_program(kind: str, mode: str,
                                                    tmp_path: Path) -> None:
    """40 Ctrl-Cs / SIGALRM timeouts during a loop of traced calls: all 40 caught by the program."""
    plain = _run("plain", kind, tmp_path=tmp_path)
    assert (plain.returncode, plain.stdout) == (0, "arrived 40 of 40\n"), plain.stderr
    traced = _run(mode, kind, tmp_path=tmp_path)
    assert traced.stdout.startswith("arrived 40 of 40\n"), traced.stdout + traced.stderr
    assert traced.returncode == 0, traced.stderr
    assert "internal error" not in traced.stderr


@pytest.mark.parametrize("mode", TRACED_MODES)
def test_a_handlers_sys_exit_ends_the_program(mode: str, tmp_path: Path) -> None:
    """A SIGALRM handler calling sys.exit(7) mid-loop exits with 7, five times out of five."""
    plain = _run("plain", "exit", tmp_path=tmp_path)
    assert (plain.returncode, plain.stdout) == (7, ""), plain.stderr
    for _ in range(5):
        traced = _run(mode, "exit", tmp_path=tmp_path)
        assert (traced.returncode, traced.stdout) == (7, ""), traced.stderr
        assert "internal error" not in traced.stderr


def _interrupted(mode: str, tmp_path: Path) -> tuple[int, str]:
    """Start the endless sample, wait for "ready", send a real SIGINT; exit status and stderr."""
    shutil.copy(SAMPLE, tmp_path / SAMPLE.name)
    cmd, env = _command(mode, "forever")
    with subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{mode}: SIGINT did not stop the program within 60 s")
    return proc.returncode, stderr


@pytest.mark.parametrize("mode", TRACED_MODES)
def test_a_real_ctrl_c_stops_a_call_heavy_loop(mode: str, tmp_path: Path) -> None:
    """kill -INT into a loop of traced calls stops the program as it stops the untraced one."""
    code, stderr = _interrupted("plain", tmp_path)
    assert code == -signal.SIGINT and "KeyboardInterrupt" in stderr
    for _ in range(5):
        code, stderr = _interrupted(mode, tmp_path)
        assert code == -signal.SIGINT, stderr
        shown = traceback_part(stderr)
        assert shown.rstrip().endswith("KeyboardInterrupt"), stderr
        assert "internal error" not in stderr
        # the pure-Python core's callback may show as one frame (its callbacks are bytecode);
        # nothing else of the tracer (bridge, capture, runtime context) does
        ours = [line for line in shown.splitlines() if "flowtrace_otel" in line]
        assert len(ours) <= 1 and all("monitoring.py" in line for line in ours), shown


class _Handler:
    """A signal handler object (its __call__ is what runs)."""

    def __call__(self, signum: int, frame: object) -> None:
        raise TimeoutError("object")

    def method(self, signum: int, frame: object) -> None:
        raise TimeoutError("method")


def _function_handler(signum: int, frame: object, extra: str = "") -> None:
    raise TimeoutError("function" + extra)


@pytest.mark.parametrize("handler", [
    _function_handler, functools.partial(_function_handler, extra="!"), _Handler(),
    _Handler().method,
], ids=["function", "partial", "callable-object", "bound-method"])
def test_a_handlers_exception_is_the_programs(handler: Any) -> None:
    """Raised through an installed handler: the program's, its traceback starting there."""
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        try:
            handler(signal.SIGUSR1, None)
        except TimeoutError as error:
            mine = program_exception(error)
        assert mine is not None
        assert mine.__traceback__ is not None
        assert mine.__traceback__.tb_frame.f_code.co_name in ("_function_handler", "__call__",
                                                               "method")
        signal.signal(signal.SIGUSR1, previous)
        try:  # the same handler, no longer installed: an ordinary (tracer) error
            handler(signal.SIGUSR1, None)
        except TimeoutError as error:
            assert program_exception(error) is None
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_interrupts_are_always_the_programs() -> None:
    """KeyboardInterrupt and SystemExit never count as tracer errors."""
    for error in (KeyboardInterrupt(), SystemExit(3)):
        assert program_exception(error) is error
    assert program_exception(ValueError("a tracer bug")) is None
