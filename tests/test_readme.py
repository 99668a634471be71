"""The README's examples run as written, and the seed example prints the README's tree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)
PYTHON_BLOCKS = [code for lang, code in BLOCKS if lang == "python"]


def run_block(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "readme_example.py"
    script.write_text(code)
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "NO_COLOR": "1"}
    env.pop("FLOWTRACE_OTEL", None)
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def mask(text: str) -> str:
    return re.sub(r"\[\d+\.\d{6}s\]", "[…s]", text)


def test_there_are_python_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_every_python_block_runs(index: int, tmp_path: Path) -> None:
    done = run_block(PYTHON_BLOCKS[index], tmp_path)
    assert done.returncode == 0, done.stderr


def test_seed_example_prints_the_readme_tree(tmp_path: Path) -> None:
    seed = next(code for code in PYTHON_BLOCKS if "fib(3)" in code)
    expected = next(code for lang, code in BLOCKS if lang == "" and "→ fib(3)" in code)
    done = run_block(seed, tmp_path)
    assert mask(done.stdout) == mask(expected)


def test_api_example_redacts_and_does_not_call_repr(tmp_path: Path) -> None:
    api = next(code for code in PYTHON_BLOCKS if "@trace(show_result=True)" in code)
    done = run_block(api, tmp_path)
    assert "→ checkout([1, 2], [REDACTED])" in done.stderr
    assert "price(<Order>)" in done.stdout
