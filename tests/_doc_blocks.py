"""Runnable code blocks of the Markdown docs: how a page marks them, and how a test runs them.

The convention (docs/contributing.md):

* an HTML comment ``<!-- run -->`` on the line before a fenced block (blank lines between are
  allowed) makes it runnable. A ``python`` block runs as a script in an empty directory; a
  ``console`` block runs each ``$ command`` line with bash from the repository root, and the
  lines after a command are the output it must print (stdout and stderr together);
* ``<!-- prints -->`` (or ``<!-- prints stderr -->``) before the next fenced block says that
  block is exactly what the runnable block before it prints on stdout (or stderr).

Durations (``[0.000013s]``) differ from run to run and are compared as ``[…s]``. The comments
are invisible on the site and on GitHub.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FENCE = re.compile(r"^(`{3,})(\w*)[^\n]*\n(.*?)^\1[ \t]*$", re.S | re.M)
_MARK = re.compile(r"^<!--\s*(run|prints(?: stderr)?)\s*-->\s*\Z", re.M)


@dataclass
class Block:
    """One runnable block, where it is, and what it must print (None: not shown)."""

    page: str
    line: int
    lang: str
    code: str
    stdout: str | None = None
    stderr: str | None = None

    @property
    def name(self) -> str:
        """``page:line``, for test ids."""
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The runnable blocks of a page, each with the output the page shows for it."""
    text = path.read_text(encoding="utf-8")
    found: list[Block] = []
    last = 0
    for fence in _FENCE.finditer(text):
        mark = _MARK.search(text, last, fence.start())
        last = fence.end()
        if mark is None:
            continue
        lang, code = fence.group(2), fence.group(3)
        line = text.count("\n", 0, fence.start()) + 1
        if mark.group(1) == "run":
            found.append(Block(path.name, line, lang, code))
        elif not found or found[-1].lang != "python":
            raise ValueError(f"{path.name}:{line}: <!-- prints --> needs a python block before it")
        elif mark.group(1) == "prints":
            found[-1].stdout = code
        else:
            found[-1].stderr = code
    return found


def mask(text: str) -> str:
    """Output with durations (``[0.000013s]``) made equal."""
    return re.sub(r"\[\d+\.\d+s\]", "[…s]", text)


def _env() -> dict[str, str]:
    """The environment of a run: no colour, no export, the test's interpreter first on PATH."""
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "NO_COLOR": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("FLOWTRACE_OTEL", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.pop(name, None)
    return env


def run_python(code: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run a python block as a script in ``workdir``."""
    script = workdir / "doc_example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], cwd=workdir, env=_env(),
                          capture_output=True, text=True, timeout=120, check=False)


def console_steps(code: str) -> list[tuple[str, str]]:
    """A console block as (command, output shown after it) pairs."""
    steps: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
        else:
            raise ValueError(f"console block starts with output, not '$ ': {line!r}")
    return [(command, "".join(f"{out}\n" for out in output)) for command, output in steps]


def run_command(command: str) -> subprocess.CompletedProcess[str]:
    """Run one console command from the repository root, stderr merged into stdout."""
    return subprocess.run(["bash", "-c", command], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120, check=False)
