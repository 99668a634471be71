"""Drive a real interactive interpreter (the REPL, IPython) the way a person types into it.

``type_into`` starts the program on a pseudo-terminal (so 3.13's new REPL runs, not the basic
one it falls back to without a terminal), types each line after waiting for the prompt, and
returns everything the terminal showed, with escape sequences and carriage returns removed.
"""

from __future__ import annotations

import os
import pty
import re
import select
import time
from collections.abc import Callable

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[@-~]|\x1b[=>]|\x1b\][^\x07]*\x07|\r")
TIMEOUT = 60.0


class Terminal:
    """A child process on a pseudo-terminal and what it has printed so far."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        """Start ``argv`` on a new pseudo-terminal."""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes the program
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.raw = b""

    def read_until(self, done: Callable[[bytes], bool], timeout: float = TIMEOUT) -> bool:
        """Read output until ``done(output)`` holds or the child closed the terminal."""
        end = time.monotonic() + timeout
        while not done(self.raw):
            left = end - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return False
            if not chunk:
                return False
            self.raw += chunk
        return True

    def close(self) -> int:
        """Wait for the child to end (it was told to quit) and return its exit status."""
        self.read_until(lambda _: False, timeout=TIMEOUT)
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def type_into(argv: list[str], lines: list[str], env: dict[str, str], cwd: str,
              prompt: bytes = b">>> ", quit_line: str = "exit()") -> str:
    """Type ``lines`` at the prompts of the interactive ``argv``; return the screen as text."""
    term = Terminal(argv, env, cwd)
    try:
        assert term.read_until(lambda out: prompt in out), _clean(term.raw)
        for line in lines:
            seen = _prompts(term.raw, prompt)
            os.write(term.fd, line.encode() + b"\r")
            assert term.read_until(lambda out, seen=seen: _prompts(out, prompt) > seen), (
                f"no prompt after {line!r}:\n{_clean(term.raw)}")
        os.write(term.fd, quit_line.encode() + b"\r")
    finally:
        code = term.close()
    assert code == 0, _clean(term.raw)
    return _clean(term.raw)


def _prompts(raw: bytes, prompt: bytes) -> int:
    """How many prompts (first or continuation line) the output shows."""
    return raw.count(prompt) + raw.count(b"... ")


def _clean(raw: bytes) -> str:
    """The text of terminal output without colours, cursor moves and carriage returns."""
    return _ESCAPES.sub("", raw.decode("utf-8", errors="replace"))
