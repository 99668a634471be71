"""Killed by SIGTERM: ``flowtrace-otel run`` keeps what finished, and dies by SIGTERM (12.6).

Each program prints "ready" after its finished calls and then waits; the test reads that line
(never a fixed sleep), sends SIGTERM, and checks the exit status (-15, as untraced), the tree
printed on stderr or the spans the receiver got. A program's own SIGTERM handler wins.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from _programs import PY, SIGTERM_SERVER, clean_env, command, until_sigterm, write

from flowtrace_otel.testing import OtlpReceiver

# os.write, not print: a handler printing while the signal interrupted a print of the main
# thread would fail with "reentrant call", traced or not
OWN_HANDLER = """
    import os, signal, sys, time
    def step(i):
        return i * i
    def bye(signum, frame):
        os.write(1, b"program's handler\\n")
        sys.exit(3)
    signal.signal(signal.SIGTERM, bye)
    for i in range(2):
        step(i)
    os.write(1, b"ready\\n")
    time.sleep(60)
"""

FORKING = """
    import os, signal, time
    def step(i):
        return i * i
    step(1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, b"default" if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
                 else b"handler")
        time.sleep(60)
        os._exit(0)
    print("child:", os.read(read, 16).decode(), flush=True)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    print("child killed by SIGTERM:", os.WIFSIGNALED(status)
          and os.WTERMSIG(status) == signal.SIGTERM, flush=True)
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """A live OTLP/HTTP receiver for the module."""
    with OtlpReceiver(grpc=False) as running:
        yield running


def test_tree_of_finished_calls_is_printed(tmp_path: Path) -> None:
    """Tree mode: the finished calls are printed, the open one marked, exit status -15."""
    script = write(tmp_path, SIGTERM_SERVER)
    plain = until_sigterm(command("plain", script), tmp_path, clean_env())
    traced = until_sigterm(command("cli", script), tmp_path, clean_env())
    assert plain.code == traced.code == -signal.SIGTERM
    assert traced.stdout == plain.stdout == "ready\n"
    tree = traced.stderr
    assert tree.count("step(") == 5, tree
    assert "serve()" in tree, tree


def test_spans_are_exported(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """``--otel``: the finished calls' spans reach the receiver, exit status -15."""
    script = write(tmp_path, SIGTERM_SERVER)
    receiver.clear()
    env = clean_env(**receiver.env())
    done = until_sigterm([PY, "-m", "flowtrace_otel", "run", "--otel", script.name],
                         tmp_path, env)
    err = done.stderr
    assert done.code == -signal.SIGTERM, err
    spans = receiver.wait_for_spans(6, timeout=20)
    assert sorted(s["name"] for s in spans) == ["serve"] + ["step"] * 5
    assert "flowtrace-otel: trace " in err


def test_program_handler_wins(tmp_path: Path) -> None:
    """A program's own SIGTERM handler runs as untraced; the tree is printed once, at the end."""
    script = write(tmp_path, OWN_HANDLER)
    plain = until_sigterm(command("plain", script), tmp_path, clean_env())
    traced = until_sigterm(command("cli", script), tmp_path, clean_env())
    assert plain.code == traced.code == 3, (plain, traced)
    assert plain.stdout == traced.stdout == "ready\nprogram's handler\n"
    assert traced.stderr.count("step(") == 2, traced.stderr
    assert traced.stderr.count("bye(") == 1, traced.stderr


def test_forked_child_gets_the_default_action(tmp_path: Path) -> None:
    """A forked child of a program under ``run`` dies by SIGTERM at once (no flush handler)."""
    script = write(tmp_path, FORKING)
    done = until_sigterm(command("cli", script), tmp_path, clean_env())
    assert done.stdout == "child: default\nchild killed by SIGTERM: True\nready\n", done.stderr
    assert done.code == -signal.SIGTERM
    assert "step(1)" in done.stderr
