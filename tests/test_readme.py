"""The README is a front page: short, its examples run as written, its links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests._doc_blocks import ROOT, Block, blocks, mask, run_python

PATH = ROOT / "README.md"
README = PATH.read_text(encoding="utf-8")
BLOCKS = blocks(PATH)


def test_the_readme_is_a_front_page() -> None:
    assert len(README) <= 10_000, f"{len(README)} characters: move the detail to docs/"


def test_every_python_block_is_run() -> None:
    python = re.findall(r"^```python\n", README, flags=re.M)
    assert len(python) == sum(1 for block in BLOCKS if block.lang == "python") >= 1


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_block_runs_and_prints_what_the_readme_shows(block: Block, tmp_path: Path) -> None:
    assert block.lang == "python"
    done = run_python(block.code, tmp_path)
    assert done.returncode == 0, done.stderr
    if block.stdout is not None:
        assert mask(done.stdout) == mask(block.stdout)


def test_seed_example_prints_the_seed_tree() -> None:
    seed = next(block for block in BLOCKS if "fib(3)" in block.code)
    assert seed.stdout is not None and "→ fib(3)\n  → fib(2)\n" in seed.stdout


def test_relative_links_lead_to_files() -> None:
    links = re.findall(r"\]\((?!https?:|#|<)([^)#]+)", README)
    assert len(links) >= 15
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == []


def test_the_performance_table_says_how_it_was_measured() -> None:
    section = README.split("## Performance", 1)[1].split("\n## ", 1)[0]
    assert "bench/run.py" in section and "./dev bench" in section
    assert re.search(r"^\| .* \| [\d.]+ × \|", section, flags=re.M)
