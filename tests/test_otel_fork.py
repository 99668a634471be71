"""Forking under FLOWTRACE_OTEL=1 warns exactly when the untraced program warns."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowtrace_otel.testing import OtlpReceiver

PROGRAM = textwrap.dedent('''
    import os, sys, threading
    def work(n):
        return n + 1
    def main(own_thread):
        work(1)
        stop = threading.Event()
        waiter = threading.Thread(target=stop.wait, daemon=True)
        if own_thread:
            waiter.start()
        pid = os.fork()
        if pid == 0:
            work(2)
            os._exit(0)
        os.waitpid(pid, 0)
        stop.set()
        if own_thread:
            waiter.join()
        pid = os.fork()  # a second fork: the one-shot filter must still do its job
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        print("done")
    main(sys.argv[1] == "thread")
''')


@pytest.mark.parametrize("own_thread", ["none", "thread"])
def test_fork_warning_is_the_untraced_programs(tmp_path: Path, own_thread: str) -> None:
    script = tmp_path / "forking.py"
    script.write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWTRACE", "OTEL_"))}
    plain = subprocess.run([sys.executable, str(script), own_thread], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, check=True)
    with OtlpReceiver(grpc=False) as receiver:
        traced = subprocess.run([sys.executable, str(script), own_thread],
                                env={**env, "FLOWTRACE_OTEL": "1", **receiver.env()},
                                cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                check=True)
        assert receiver.wait_for_spans(3)  # really traced: work, work in the child, main
    normalize = lambda text: "".join(  # the pid differs between runs
        line.split("(pid=")[0] for line in text.splitlines(keepends=True))
    assert normalize(traced.stderr) == normalize(plain.stderr)
    assert ("multi-threaded" in plain.stderr) == (own_thread == "thread")
    assert traced.stdout == plain.stdout == "done\n"
