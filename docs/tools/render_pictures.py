"""Draw the README's two pictures from real runs of ``examples/quickstart.py`` (no network).

1. ``docs/images/demo-terminal.svg``: what ``./dev demo`` prints in a terminal. The command
   (``flowtrace-otel run examples/quickstart.py``) runs under a pseudo-terminal, so the colours
   are the ones a terminal gets; its bytes (ANSI colour codes included) are drawn as an SVG.
2. ``docs/images/demo-spans.svg``: the same program run with ``FLOWTRACE_OTEL=1``, exporting
   OTLP/HTTP to a real receiver on a local socket (``flowtrace_otel.testing.OtlpReceiver``);
   the spans it received are drawn as a timeline, one row per span, indented by parent. It is
   labelled as what it is: a drawing of the received spans, not a screenshot of Jaeger (no
   Jaeger runs on the machine that made it).

Run from the repository root with a venv that has the test extra::

    .venv-3.12/bin/python docs/tools/render_pictures.py
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from html import escape
from pathlib import Path
from typing import Any

from flowtrace_otel.testing import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
EXAMPLE = "examples/quickstart.py"
BIN = Path(sys.executable).parent

FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace"
CHAR_W, LINE_H, PAD = 8.4, 19, 16
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
COLOURS = {"31": "#f7768e", "36": "#7dcfff", "2": "#7f849c", "1": "#ffffff"}
TEXT, BACKGROUND, TITLE_BAR = "#c0caf5", "#1a1b26", "#24283b"


def run_in_terminal(args: list[str]) -> str:
    """The output of ``args`` run on a pseudo-terminal (stdout and stderr, as a user sees it)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    for name in ("NO_COLOR", "FLOWTRACE_OTEL", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.pop(name, None)
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdin=follower, stdout=follower,
                               stderr=follower, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower side closed: the program ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(leader)
    text = b"".join(chunks).decode("utf-8").replace("\r\n", "\n")
    return _OSC.sub("", text)  # hyperlinks (OSC 8) and titles: the picture shows the text


def styled_runs(line: str) -> list[tuple[str, str | None]]:
    """A line with ANSI SGR codes as (text, colour) runs."""
    runs: list[tuple[str, str | None]] = []
    colour: str | None = None
    for part in re.split(r"(\x1b\[[0-9;]*m)", line):
        code = re.fullmatch(r"\x1b\[([0-9;]*)m", part)
        if code:
            colour = COLOURS.get(code.group(1).split(";")[-1]) if code.group(1) != "0" else None
        elif part:
            runs.append((part, colour))
    return runs


def terminal_svg(command: str, output: str) -> str:
    """A terminal window showing ``$ command`` and its output."""
    lines = [f"\x1b[1m$ {command}\x1b[0m", *output.rstrip("\n").split("\n")]
    width = max(len(re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in lines)
    w = int(PAD * 2 + max(width, 60) * CHAR_W)
    h = int(34 + PAD * 2 + len(lines) * LINE_H)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" role="img" aria-label="{escape(command)} in a terminal">',
           f'<rect width="{w}" height="{h}" rx="8" fill="{BACKGROUND}"/>',
           f'<rect width="{w}" height="28" rx="8" fill="{TITLE_BAR}"/>',
           f'<rect y="20" width="{w}" height="8" fill="{TITLE_BAR}"/>',
           *(f'<circle cx="{18 + 20 * i}" cy="14" r="6" fill="{c}"/>'
             for i, c in enumerate(("#ff5f56", "#ffbd2e", "#27c93f"))),
           f'<text x="{w / 2}" y="18" fill="#a9b1d6" font-family="{FONT}" font-size="12" '
           f'text-anchor="middle">terminal</text>',
           f'<g font-family="{FONT}" font-size="14" fill="{TEXT}" xml:space="preserve">']
    for row, line in enumerate(lines):
        y = 34 + PAD + (row + 1) * LINE_H - 5
        spans = "".join(
            f'<tspan fill="{colour}">{escape(text)}</tspan>' if colour else escape(text)
            for text, colour in styled_runs(line))
        out.append(f'<text x="{PAD}" y="{y}">{spans}</text>')
    out += ["</g>", "</svg>", ""]
    return "\n".join(out)


def received_spans() -> list[dict[str, Any]]:
    """The spans of one ``FLOWTRACE_OTEL=1`` run of the example, as a real receiver got them."""
    with OtlpReceiver(grpc=False) as receiver:
        env = {**os.environ, **receiver.env("http/protobuf"), "FLOWTRACE_OTEL": "1",
               "OTEL_SERVICE_NAME": "quickstart"}
        subprocess.run([sys.executable, EXAMPLE], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=120)
        return receiver.spans()


def label(span: dict[str, Any]) -> str:
    """A span's name with the attributes a reader looks for first."""
    attrs = span["attributes"]
    args = ", ".join(f"{key.removeprefix('flowtrace.arg.')}={value}"
                     for key, value in attrs.items() if key.startswith("flowtrace.arg."))
    text = f"{span['name']}({args})"
    if "flowtrace.return" in attrs:
        text += f" → {attrs['flowtrace.return']}"
    if span["status"] == "STATUS_CODE_ERROR":
        text += f"  ✗ {span['status_message']}"
    else:
        caught = [e["attributes"]["exception.type"] for e in span["events"]
                  if e["name"] == "flowtrace.exception_handled"]
        if caught:
            text += f"  (caught {', '.join(caught)})"
    return text


def spans_svg(spans: list[dict[str, Any]]) -> str:
    """A timeline of the spans: one row each, in start order, indented by depth."""
    by_id = {span["span_id"]: span for span in spans}

    def depth(span: dict[str, Any]) -> int:
        parent = by_id.get(span["parent_id"] or "")
        return 0 if parent is None else depth(parent) + 1

    rows = sorted(spans, key=lambda s: (s["start"], -s["end"]))
    start, end = min(s["start"] for s in rows), max(s["end"] for s in rows)
    label_w, time_w, bar_w, row_h, top = 600, 80, 320, 24, 92
    w, h = label_w + time_w + bar_w + 2 * PAD, top + len(rows) * row_h + 40
    service = rows[0]["resource"].get("service.name", "?")
    trace_ids = sorted({s["trace_id"] for s in rows})
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" role="img" aria-label="timeline of the exported spans">',
           f'<rect width="{w}" height="{h}" rx="8" fill="#ffffff" stroke="#d0d7de"/>',
           f'<g font-family="{FONT}" font-size="13" fill="#24292f">',
           f'<text x="{PAD}" y="26" font-size="15" font-weight="bold">'
           f'{len(rows)} spans of service “{escape(service)}” as an OTLP receiver got them</text>',
           f'<text x="{PAD}" y="46" fill="#57606a">trace {" ".join(trace_ids)}</text>',
           f'<text x="{PAD}" y="66" fill="#57606a">a timeline drawn from the received spans by '
           f'docs/tools/render_pictures.py (not a Jaeger screenshot)</text>']
    for row, span in enumerate(rows):
        y = top + row * row_h
        x0 = PAD + label_w + time_w + (span["start"] - start) / (end - start) * bar_w
        bar = max(2.0, (span["end"] - span["start"]) / (end - start) * bar_w)
        error = span["status"] == "STATUS_CODE_ERROR"
        ms = (span["end"] - span["start"]) / 1e6
        out += [f'<rect x="{PAD}" y="{y}" width="{w - 2 * PAD}" height="{row_h}" '
                f'fill="{"#f6f8fa" if row % 2 else "#ffffff"}"/>',
                f'<text x="{PAD + 6 + 16 * depth(span)}" y="{y + 16}" xml:space="preserve">'
                f'{escape(label(span))}</text>',
                f'<rect x="{x0:.1f}" y="{y + 5}" width="{bar:.1f}" height="{row_h - 10}" rx="2" '
                f'fill="{"#cf222e" if error else "#0969da"}"/>',
                f'<text x="{PAD + label_w + time_w - 10}" y="{y + 16}" text-anchor="end" '
                f'fill="#57606a" font-size="11">{ms:.3f} ms</text>']
    out += [f'<text x="{PAD}" y="{h - 14}" fill="#57606a" font-size="11">attributes on each '
            f'span: code.function.name, code.file.path, code.line.number, flowtrace.arg.*, '
            f'flowtrace.return, thread.*</text>', "</g>", "</svg>", ""]
    return "\n".join(out)


def main() -> None:
    """Run the example twice and write both pictures."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    output = run_in_terminal([str(BIN / "flowtrace-otel"), "run", EXAMPLE])
    (IMAGES / "demo-terminal.svg").write_text(
        terminal_svg(f"flowtrace-otel run {EXAMPLE}", output), encoding="utf-8")
    (IMAGES / "demo-spans.svg").write_text(spans_svg(received_spans()), encoding="utf-8")
    print(f"wrote {IMAGES / 'demo-terminal.svg'} and {IMAGES / 'demo-spans.svg'}")


if __name__ == "__main__":
    main()
