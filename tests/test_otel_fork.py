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
            # a joined thread may linger for a moment at the OS level, where Python's fork
            # warning counts threads: wait until it is gone, so the untraced run never warns
            while os.path.exists(f"/proc/self/task/{waiter.native_id}"):
                pass
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
        # the parent flushed before it exited; the children end with os._exit, which runs
        # nothing (no atexit): their work(2) cannot be sent (docs/export.md, Fork)
        names = sorted(s["name"] for s in receiver.spans())
    assert names == ["main", "work"]
    normalize = lambda text: "".join(  # the pid differs between runs
        line.split("(pid=")[0] for line in text.splitlines(keepends=True))
    assert normalize(traced.stderr) == normalize(plain.stderr)
    assert ("multi-threaded" in plain.stderr) == (own_thread == "thread")
    assert traced.stdout == plain.stdout == "done\n"


WORKERS = textwrap.dedent('''
    import multiprocessing as mp, os, sys
    def square(n):
        return n * n
    def in_process(n):
        return n + 1
    def main(kind):
        if kind == "process":
            children = [mp.Process(target=in_process, args=(n,)) for n in range(3)]
            for child in children:
                child.start()
            for child in children:
                child.join()
            print("exit codes", [c.exitcode for c in children])
        else:
            with mp.Pool(4) as pool:  # __exit__ terminates the workers with SIGTERM
                print(sum(pool.map(square, range(20))))
    mp.set_start_method("fork")
    if sys.argv[1] == "toplevel":  # the tasks are traces of their own, sent by the workers
        with mp.Pool(4) as pool:
            print(sum(pool.map(square, range(20))))
    else:
        main(sys.argv[1])
''')


@pytest.mark.parametrize(("kind", "function", "count"),
                         [("process", "in_process", 3), ("pool", "square", 20),
                          ("toplevel", "square", 20)])
def test_forked_workers_export_each_call_once(tmp_path: Path, kind: str, function: str,
                                              count: int) -> None:
    """Process children and Pool(4) workers (SIGTERMed by the pool's exit) send every call once.

    Each worker call is exported exactly once, in the parent's trace, under its ``main`` span.
    """
    script = tmp_path / "workers.py"
    script.write_text(WORKERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWTRACE", "OTEL_"))}
    plain = subprocess.run([sys.executable, str(script), kind], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, check=True)
    with OtlpReceiver(grpc=False) as receiver:
        traced = subprocess.run([sys.executable, str(script), kind],
                                env={**env, "FLOWTRACE_OTEL": "1", **receiver.env(),
                                     # every call a span: a worker's calls beyond 5 would be
                                     # folded into its copy of main's span, which never ends
                                     "FLOWTRACE_OTEL_FOLD_AFTER": "0"},
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        # the parent's main span comes last (it flushes at exit, after its workers did)
        spans = receiver.wait_for_spans(count + (kind != "toplevel"))
    assert traced.returncode == plain.returncode == 0, traced.stderr
    assert traced.stdout == plain.stdout
    names = [s["name"] for s in spans]
    assert names.count(function) == count, names
    if kind == "toplevel":
        assert len(spans) == count and all(s["parent_id"] is None for s in spans)
        return
    assert names.count("main") == 1, names
    main = next(s for s in spans if s["name"] == "main")
    workers = [s for s in spans if s["name"] == function]
    assert {s["trace_id"] for s in workers} == {main["trace_id"]}
    assert {s["parent_id"] for s in workers} == {main["span_id"]}
