"""docs/trees.md: every Python example runs, and prints exactly the output shown after it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = (Path(__file__).parent.parent / "docs" / "trees.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```python\n(.*?)```(?:\n\nprints\n\n```text\n(.*?)```)?", DOC, flags=re.S)


def test_the_page_has_examples_with_their_output() -> None:
    assert len(EXAMPLES) >= 3
    assert sum(1 for _code, shown in EXAMPLES if shown) >= 2


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_runs_and_prints_what_the_page_shows(index: int, tmp_path: Path) -> None:
    code, shown = EXAMPLES[index]
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("FLOWTRACE_OTEL", None)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    if shown:
        assert done.stdout == shown
