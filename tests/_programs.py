"""Run small Python programs in subprocesses: plainly, under the CLI, or with FLOWTRACE_OTEL=1.

Shared by the reliability tests (issue 7). Every run gets a clean environment (no inherited
``FLOWTRACE_OTEL*``/``OTEL_*``), its own working folder and a timeout, and reports stdout,
stderr, the exit code and the wall time.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PY = sys.executable
PACKAGE_DIR = str(Path(__file__).resolve().parent.parent / "flowtrace_otel")
MODES = ("plain", "cli", "env")


@dataclasses.dataclass
class Run:
    """What a finished program did."""

    stdout: str
    stderr: str
    code: int
    seconds: float


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without tracer/OTel settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k == "FLOWTRACE_OTEL_CORE"  # the core under test
           or not k.startswith(("FLOWTRACE_OTEL", "OTEL_", "COVERAGE_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONUNBUFFERED", None)  # programs see python's default buffering
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def write(folder: Path, source: str, name: str = "prog.py") -> Path:
    """Write ``source`` (dedented) to ``folder/name`` and return the path."""
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def command(mode: str, script: Path, args: tuple[str, ...] = ()) -> list[str]:
    """The command line that runs ``script`` in ``mode``, named relative to its folder.

    Programs run with their folder as the working directory, so the name is what a user types.
    """
    if mode == "cli":
        return [PY, "-m", "flowtrace_otel", "run", script.name, *args]
    return [PY, script.name, *args]


def mode_env(mode: str, receiver_env: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for ``mode``: FLOWTRACE_OTEL=1 plus the receiver's endpoint for "env"."""
    env = clean_env(**extra)
    if mode == "env":
        env["FLOWTRACE_OTEL"] = "1"
        env.update(receiver_env or {"OTEL_TRACES_EXPORTER": "none"})
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None,
        timeout: float = 60.0) -> Run:
    """Run ``cmd`` and collect its output, exit code and wall time."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, input=stdin, capture_output=True, text=True,
                          timeout=timeout, encoding="utf-8", errors="replace")
    return Run(proc.stdout, proc.stderr, proc.returncode, time.perf_counter() - started)


def run_program(source: str, mode: str, folder: Path, receiver_env: dict[str, str] | None = None,
                *, args: tuple[str, ...] = (), stdin: str | None = None, **extra: str) -> Run:
    """Write ``source`` into ``folder`` and run it in ``mode`` (cwd = ``folder``)."""
    script = write(folder, source)
    return run(command(mode, script, args), mode_env(mode, receiver_env, **extra), folder, stdin)


def traceback_part(stderr: str) -> str:
    """The text of stderr up to the CLI's tree (lines starting with an arrow)."""
    lines = stderr.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.lstrip().startswith(("→", "←", "… ")):
            return "".join(lines[:index])
    return stderr


#: a server that finishes five calls, says "ready" and waits to be killed (inside ``serve``)
SIGTERM_SERVER = """
    import time
    def step(i):
        return i * i
    def serve():
        for i in range(5):
            step(i)
        print("ready", flush=True)
        time.sleep(60)
    serve()
"""


@dataclasses.dataclass
class Terminated:
    """What a program killed by SIGTERM did."""

    code: int
    stdout: str  # the lines up to "ready" included, then the rest
    stderr: str
    seconds: float  # from the signal to the exit


def until_sigterm(cmd: list[str], folder: Path, env: dict[str, str],
                  timeout: float = 60.0) -> Terminated:
    """Run ``cmd``, wait for its "ready" line (never a fixed sleep), send SIGTERM, collect.

    ``timeout`` bounds the wait for the exit after the signal: a run that takes longer hangs.
    """
    proc = subprocess.Popen(cmd, env=env, cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8")
    assert proc.stdout is not None and proc.stderr is not None
    try:
        lines: list[str] = []
        while not lines or lines[-1] != "ready\n":
            line = proc.stdout.readline()
            assert line, f"the program ended before it was ready: {proc.stderr.read()}"
            lines.append(line)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=timeout)
        return Terminated(proc.returncode, "".join(lines) + out, err, time.perf_counter() - sent)
    finally:
        proc.kill()
        proc.communicate()
