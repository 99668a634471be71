"""A traced function that starts a traced Python child (subprocess and multiprocessing spawn)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")


def spawn_child() -> int:
    return subprocess.run([sys.executable, CHILD], check=True).returncode


def spawn_child_with_env() -> int:
    env = {"PATH": os.environ.get("PATH", ""), "FLOWTRACE_OTEL": "1",
           **{k: v for k, v in os.environ.items() if k.startswith("OTEL_")}}
    return subprocess.run([sys.executable, CHILD], check=True, env=env).returncode


def mp_target(n: int) -> int:
    return n * 2


def spawn_process() -> int | None:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=mp_target, args=(3,))
    proc.start()
    proc.join()
    return proc.exitcode


def main() -> None:
    spawn_child()
    spawn_child_with_env()
    spawn_process()


if __name__ == "__main__":
    main()
