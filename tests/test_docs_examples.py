"""Every block a docs page marks ``<!-- run -->`` runs, and prints what the page shows.

The convention is in tests/_doc_blocks.py and docs/contributing.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._doc_blocks import ROOT, Block, blocks, console_steps, mask, run_command, run_python

PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCKS = [block for page in PAGES for block in blocks(page)]


def test_the_docs_have_runnable_blocks_with_output() -> None:
    assert len(BLOCKS) >= 8
    assert sum(1 for block in BLOCKS if block.stdout is not None) >= 4
    assert {block.lang for block in BLOCKS} == {"python", "console"}


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_block_runs_and_prints_what_the_page_shows(block: Block, tmp_path: Path) -> None:
    if block.lang == "python":
        done = run_python(block.code, tmp_path)
        assert done.returncode == 0, done.stderr
        if block.stdout is not None:
            assert mask(done.stdout) == mask(block.stdout)
        if block.stderr is not None:
            assert mask(done.stderr) == mask(block.stderr)
        return
    assert block.lang == "console", f"{block.name}: only python and console blocks run"
    for command, shown in console_steps(block.code):
        done = run_command(command)
        assert done.returncode == 0, f"$ {command}\n{done.stdout}"
        if shown:
            assert mask(done.stdout) == mask(shown), f"$ {command}"


def test_a_wrong_output_is_caught(tmp_path: Path) -> None:
    """The check can fail: a block whose shown output differs from what it prints."""
    page = tmp_path / "page.md"
    page.write_text("<!-- run -->\n```python\nprint('a')\n```\n\n"
                    "<!-- prints -->\n```text\nb\n```\n")
    [block] = blocks(page)
    assert block.stdout == "b\n"
    assert mask(run_python(block.code, tmp_path).stdout) != mask(block.stdout)


def test_unmarked_blocks_are_left_alone(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nraise SystemExit(1)\n```\n\ntext <!-- run -->\n\n"
                    "```sh\nfalse\n```\n")
    assert blocks(page) == []


def test_api_example_redacts_and_does_not_call_repr(tmp_path: Path) -> None:
    """What docs/api.md says of its example: `password` redacted, `Order` shown as `<Order>`."""
    api = next(b for b in BLOCKS if b.page == "api.md" and "@trace(show_result=True)" in b.code)
    done = run_python(api.code, tmp_path)
    assert "→ checkout([1, 2], [REDACTED])" in done.stderr
    assert "price(<Order>)" in done.stdout
