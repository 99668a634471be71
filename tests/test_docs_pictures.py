"""The README's terminal picture shows what `flowtrace-otel run` prints for the quickstart today.

The picture is drawn by docs/tools/render_pictures.py from a real run; when the tree's format
changes, this fails until the picture is drawn again.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from tests._doc_blocks import ROOT, mask, run_command

PICTURE = ROOT / "docs" / "images" / "demo-terminal.svg"
SPANS = ROOT / "docs" / "images" / "demo-spans.svg"


def svg_lines(path: Path) -> list[str]:
    """The text lines of an SVG drawn by render_pictures.py, tags removed."""
    text = path.read_text(encoding="utf-8")
    rows = re.findall(r"<text [^>]*>(.*?)</text>", text)
    return [html.unescape(re.sub(r"<[^>]+>", "", row)) for row in rows]


def test_the_terminal_picture_shows_todays_tree() -> None:
    done = run_command("flowtrace-otel run examples/quickstart.py")
    assert done.returncode == 0, done.stdout
    shown = [mask(line) for line in svg_lines(PICTURE)]
    printed = [mask(line) for line in done.stdout.splitlines()]
    assert "$ flowtrace-otel run examples/quickstart.py" in shown
    assert len(printed) >= 15
    assert sorted(printed) == sorted(shown[shown.index("$ flowtrace-otel run "
                                                       "examples/quickstart.py") + 1:])


def test_the_spans_picture_says_what_it_is() -> None:
    lines = svg_lines(SPANS)
    assert any("not a Jaeger screenshot" in line for line in lines)
    assert any(line.startswith("price(item='kiwi', qty=1)") and "KeyError" in line
               for line in lines)
