"""The HTML page rendered by a real browser (Debian's headless Chromium): what a person sees.

Chromium comes from ``.ci/chromium.sh`` (``./dev test`` runs it and sets
``FLOWTRACE_CHROMIUM``); without it these tests fail and say how to install it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from flowtrace_otel import TraceSession
from flowtrace_otel.html import to_html

SCRIPT = "<script>alert('owned')</script>"

PROBE = """<script>
(function () {
  var report = {closed: 0, hidden_before: 0, opened: 0, shown_after: 0, names: []};
  var closed = Array.prototype.filter.call(document.querySelectorAll("details"),
                                           function (d) { return !d.open; });
  report.closed = closed.length;
  closed.slice(0, 5).forEach(function (d) {
    var inside = d.querySelector(":scope > :not(summary)");
    if (!inside.checkVisibility()) report.hidden_before += 1;
    d.querySelector(":scope > summary").click();
    if (d.open) report.opened += 1;
    if (inside.checkVisibility()) report.shown_after += 1;
  });
  document.querySelectorAll(".ft-fn").forEach(function (e) {
    if (e.checkVisibility()) report.names.push(e.textContent);
  });
  document.body.setAttribute("data-probe", JSON.stringify(report));
})();
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def chromium() -> str:
    """The browser to run: ``FLOWTRACE_CHROMIUM`` or ``chromium`` on PATH."""
    found = os.environ.get("FLOWTRACE_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("Chromium is needed for the browser tests: run .ci/chromium.sh "
                    "(Debian's chromium package) or set FLOWTRACE_CHROMIUM")
    return found


def browse(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``page`` with ``extra`` arguments (a fresh profile)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra,
                           page.as_uri()], capture_output=True, text=True, timeout=120)


def outer(n: int) -> int:
    return sum(middle(i) for i in range(n))


def middle(i: int) -> int:
    return inner(i) + inner(i + 1)


def inner(i: int) -> int:
    return leaf(i) * 2


def leaf(i: int, label: str = SCRIPT) -> int:
    return i


def big_page(folder: Path) -> Path:
    """A page whose tree is big enough that its third level starts closed."""
    with TraceSession() as session:
        outer(60)
    path = folder / "calls.html"
    to_html(session.events, path, fold_after=0, max_lines=0, title="outer(60)")
    return path


def probe(dom: str) -> dict[str, object] | None:
    """What the probe script found, or None if it did not run."""
    match = re.search(r'data-probe="([^"]*)"', dom)
    if match is None:
        return None
    import html

    return json.loads(html.unescape(match.group(1)))  # type: ignore[no-any-return]


def test_the_tree_shows_and_expands_in_a_browser(tmp_path: Path) -> None:
    """Function names are rendered; clicking a closed call's summary shows what it hides."""
    page = big_page(tmp_path)
    dom = browse(page, tmp_path, "--dump-dom").stdout
    assert "<details" in dom and "outer" in dom and "middle" in dom
    assert "&lt;script&gt;alert('owned')&lt;/script&gt;" in dom  # the argument, as text
    # the page itself forbids scripts: an injected one does not run
    blocked = page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>")
    (tmp_path / "blocked.html").write_text(blocked, encoding="utf-8")
    assert probe(browse(tmp_path / "blocked.html", tmp_path, "--dump-dom").stdout) is None
    # without its Content-Security-Policy, a probe clicks the summaries of closed calls
    allowed = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", blocked)
    (tmp_path / "probed.html").write_text(allowed, encoding="utf-8")
    found = probe(browse(tmp_path / "probed.html", tmp_path, "--dump-dom").stdout)
    assert found is not None
    assert found["closed"] == 120  # the inner() calls: third level, closed in a big tree
    assert found == {**found, "hidden_before": 5, "opened": 5, "shown_after": 5}
    names = found["names"]
    assert isinstance(names, list)
    assert {"outer", "middle", "inner"} <= set(names)
    assert names.count("leaf") == 5  # only the ones under the five opened calls show


def pixels(png: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and RGB(A) pixels of an 8-bit, non-interlaced PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = data
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0 and colour in (2, 6)
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * size
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - size] if x >= size else 0
            up = previous[x]
            corner = previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                guess = left + up - corner
                best = min((abs(guess - left), 0, left), (abs(guess - up), 1, up),
                           (abs(guess - corner), 2, corner))[2]
                line[x] = (line[x] + best) & 255
        rows.append(line)
        previous = line
    out = [tuple(row[x:x + 3]) for row in rows for x in range(0, stride, size)]
    return width, height, out


def luminance(pixel: tuple[int, ...]) -> float:
    red, green, blue = pixel[:3]
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_screenshot_shows_the_page_in_both_schemes(tmp_path: Path, scheme: str) -> None:
    """Not blank: text and flame boxes on a background that follows the colour scheme."""
    page = big_page(tmp_path)
    shot = tmp_path / "shot.png"
    extra = ["--force-dark-mode", "--blink-settings=preferredColorScheme=0"] if (
        scheme == "dark") else ["--blink-settings=preferredColorScheme=1"]
    done = browse(page, tmp_path, "--window-size=900,700", f"--screenshot={shot}", *extra)
    assert shot.exists(), done.stderr[-2000:]
    width, height, image = pixels(shot.read_bytes())
    assert (width, height) == (900, 700)
    background = max(set(image[:2000]), key=image[:2000].count)  # the top rows: page colour
    if scheme == "dark":
        assert luminance(background) < 60
    else:
        assert luminance(background) > 200
    ink = [p for p in image if p[:3] != background[:3]]
    assert len(ink) > 0.03 * len(image)  # text and boxes, not an empty page
    warm = {p[:3] for p in ink if p[0] > 180 and p[0] > p[2] + 40}
    assert len(warm) > 20  # the flame view's coloured boxes
    text = {p[:3] for p in ink if abs(luminance(p) - luminance(background)) > 100}
    assert text  # high-contrast glyphs: the tree's text is readable on this background


JUPYTER_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head>
<body data-jp-theme-light="{light}" style="background:{bg};color:{fg}">{fragment}
<script>
var exc = document.querySelector(".ft-exc"), dur = document.querySelector(".ft-dur");
document.body.setAttribute("data-probe", JSON.stringify({{
  exc: getComputedStyle(exc).color, dur: getComputedStyle(dur).color,
  text: getComputedStyle(document.querySelector(".ft-fn")).color}}));
</script></body></html>"""


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", css)[:3])


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_in_a_jupyter_theme_the_notebook_tree_follows_jupyter(tmp_path: Path, theme: str) -> None:
    """JupyterLab marks its theme on the body: accents follow it, whatever the system's is."""
    from flowtrace_otel.html import tree_html

    def fails() -> None:
        raise KeyError("x")

    with TraceSession() as session:
        try:
            fails()
        except KeyError:
            pass
    dark = theme == "dark"
    page = JUPYTER_PAGE.format(light="false" if dark else "true",
                               bg="#111111" if dark else "#ffffff",
                               fg="#dddddd" if dark else "#111111",
                               fragment=tree_html(session.events))
    (tmp_path / "nb.html").write_text(page, encoding="utf-8")
    scheme = "1" if dark else "0"  # the system's scheme is the other one
    found = probe(browse(tmp_path / "nb.html", tmp_path, "--dump-dom",
                         f"--blink-settings=preferredColorScheme={scheme}").stdout)
    assert found is not None
    background = (17, 17, 17) if dark else (255, 255, 255)
    text = rgb(str(found["text"]))
    assert text == ((221, 221, 221) if dark else (17, 17, 17))  # the notebook's own colour
    for accent in (rgb(str(found["exc"])), rgb(str(found["dur"]))):
        contrast = abs(luminance(accent) - luminance(background))
        assert contrast > 120, (theme, accent)  # the other palette gives 50-105 here
