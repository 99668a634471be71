"""The HTML tree and page: the same rows as the text tree, everything escaped, no fetches."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from flowtrace_otel import TraceSession, format_tree, to_folded
from flowtrace_otel.html import TreeView, flame_html, to_html, tree_html

SCRIPT = "<script>alert('owned')</script>"


def tiny(i: int) -> int:
    return i + 1


def check(i: int) -> int:
    if i == 150:
        raise ValueError("bad <row> & co")
    return tiny(i)


def main(n: int, label: str = "") -> int:
    total = 0
    for i in range(n):
        try:
            total += check(i)
        except ValueError:
            pass
    return total


def fails() -> None:
    raise KeyError("nope")


def leaf(j: int) -> int:
    return j


def middle(i: int) -> int:
    return leaf(i) + leaf(i + 1) + leaf(i + 2)


def nested(n: int) -> int:
    return sum([middle(i) for i in range(n)])


def recorded() -> TraceSession:
    with TraceSession() as session:
        main(300, SCRIPT)
        try:
            fails()
        except KeyError:
            pass
    return session


class Elements(HTMLParser):
    """The elements of an HTML document, with their attributes, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.depth = 0
        self.max_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in ("br", "meta"):
            self.depth += 1
            self.max_depth = max(self.max_depth, self.depth)

    def handle_endtag(self, tag: str) -> None:
        self.depth -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(document: str) -> Elements:
    parser = Elements()
    parser.feed(document)
    parser.close()
    return parser


def heads_of_text(text: str) -> list[str]:
    """``name(args)`` of each opening or one-line row of a text tree, in order."""
    heads = []
    for line in text.splitlines():
        match = re.match(r"\s*→ (.*?\(.*?\))(?= |$)", line)
        if match:
            heads.append(match.group(1))
    return heads


def heads_of_html(fragment: str) -> list[str]:
    """``name(args)`` of each call row of an HTML tree, in order (unescaped)."""
    pattern = (r'<span class="ft-fn"[^>]*>(.*?)</span>\(<span class="ft-args">(.*?)</span>\)')
    return [html.unescape(f"{name}({args})") for name, args in re.findall(pattern, fragment)]


def test_the_html_tree_has_the_rows_of_the_text_tree() -> None:
    """Same calls in the same order, the same folded line, the same exception marks."""
    events = recorded().events
    text = format_tree(events, show_timing=False)
    fragment = tree_html(events)
    assert heads_of_html(fragment) == heads_of_text(text)
    assert heads_of_text(text)[:2] == [f"main(300, {SCRIPT!r})", "check(0)"]
    assert "check(…)" in heads_of_html(fragment)
    assert '<span class="ft-count">×294 folded</span> (+294 calls inside)' in fragment
    assert ("raised ValueError: bad &lt;row&gt; &amp; co [caught]" in fragment)
    assert re.search(r'<div class="ft-call ft-raised ft-propagated">→ <span class="ft-fn"'
                     r"[^>]*>fails</span>\(<span class=\"ft-args\"></span>\) "
                     r"<span class=\"ft-exc\">raised KeyError: &#x27;nope&#x27; "
                     r"\[propagated\]</span>", fragment)


def test_to_html_is_exported_but_imported_on_first_use() -> None:
    code = ("import sys, flowtrace_otel\n"
            "assert 'flowtrace_otel.html' not in sys.modules\n"
            "from flowtrace_otel import to_html\n"
            "import flowtrace_otel.html\n"
            "assert to_html is flowtrace_otel.html.to_html\n"
            "assert 'to_html' in flowtrace_otel.__all__\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_script_in_an_argument_is_text() -> None:
    """A value from the program never becomes markup: the parsed page has no script element."""
    events = recorded().events
    for document in (tree_html(events), to_html(events), TreeView(events)._repr_html_()):
        elements = parsed(document)
        assert "script" not in [tag for tag, _ in elements.tags]
        assert any(SCRIPT in chunk for chunk in elements.text)  # shown, as text


def test_results_durations_and_collapsible_calls() -> None:
    events = recorded().events
    fragment = tree_html(events)
    elements = parsed(fragment)
    details = [attrs for tag, attrs in elements.tags if tag == "details"]
    assert len(details) == 6  # main and check(0..4): the calls that have children
    assert all("open" in attrs for attrs in details)  # a small tree opens everything
    assert '<span class="ft-res">→ 1</span>' in fragment  # check(0) returned 1
    assert re.search(r'<span class="ft-dur">\d+(\.\d)? [nµ]s</span>', fragment)
    assert "<style>" in fragment and "prefers-color-scheme: dark" in fragment
    assert 'data-jp-theme-light="false"' in fragment  # Jupyter's theme wins over the system's
    no_timing = tree_html(events, show_timing=False)
    assert "ft-dur" not in no_timing.replace(".ft-dur", "")


def test_big_trees_open_the_first_two_levels_only() -> None:
    with TraceSession() as session:
        nested(200)
    fragment = tree_html(session.events, fold_after=0, max_lines=0)
    opened = re.findall(r"<details[^>]*?( open)?><summary>", fragment)
    assert len(opened) == 201
    assert opened.count(" open") == 1 + 200  # nested and its 200 children; leaf() has no details
    closed = tree_html(session.events, fold_after=0, max_lines=0, open_depth=1)
    assert len(re.findall(r"<details[^>]* open>", closed)) == 1


def test_cut_markers_and_import_group_are_the_text_trees() -> None:
    with TraceSession() as session:
        nested(4)
    text = format_tree(session.events, show_timing=False, max_lines=4)
    fragment = tree_html(session.events, show_timing=False, max_lines=4)
    cuts = [line.strip() for line in text.splitlines() if "not shown" in line]
    assert cuts == ["… 1 more call not shown (max_lines): leaf() ×1",
                    "… 12 more calls not shown (max_lines): middle() ×3 and 9 calls inside"]
    assert [html.unescape(c) for c in re.findall(r'<div class="ft-cut">(.*?)</div>',
                                                 fragment)] == cuts
    events = session.events
    for event in events:
        event.import_time = True
    assert "… 17 calls made while importing modules, folded" in tree_html(events)
    assert "… 17 calls made while importing modules, folded" in format_tree(events)
    assert heads_of_html(tree_html(events, show_imports=True))[0] == "nested(4)"


def test_the_text_view_is_the_cli_tree() -> None:
    events = recorded().events
    view = TreeView(events, notes=["flowtrace-otel: trace abc  http://localhost:16686/trace/abc"])
    assert repr(view) == format_tree(events) + (
        "flowtrace-otel: trace abc  http://localhost:16686/trace/abc\n")
    link = '<a href="http://localhost:16686/trace/abc" target="_blank" rel="noopener">'
    assert link in view._repr_html_()
    assert "→ 1" not in repr(view)  # results only with show_result, as in the CLI
    assert "→ 1" in repr(TreeView(events, show_result=True))


def test_flame_view_widths_come_from_the_folded_stacks() -> None:
    events = recorded().events
    stacks = {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1])
              for line in to_folded(events).splitlines()}
    whole = sum(stacks.values())
    flame = flame_html(events, min_width=0)
    boxes = re.findall(r'<div class="ft-fb" style="left:([\d.]+)%;width:([\d.]+)%;top:([\d.]+)em;'
                       r'[^"]*" title="([^"]*)">([^<]*)</div>', flame)
    by_path = {html.unescape(title).split("\n")[0]: float(width)
               for _left, width, _top, title, _name in boxes}
    assert by_path["all: " + f"{whole:,} µs"] == 100.0
    main_total = sum(v for k, v in stacks.items() if k == "main" or k.startswith("main;"))
    assert abs(by_path["main"] - 100 * main_total / whole) < 0.001
    check_total = sum(v for k, v in stacks.items() if k.startswith("main;check"))
    assert abs(by_path["main;check"] - 100 * check_total / whole) < 0.001
    assert "no time recorded" in flame_html([])


def test_the_page_fetches_nothing_and_runs_no_script(tmp_path: Path) -> None:
    events = recorded().events
    page = to_html(events, tmp_path / "page.html", title="run <me>")
    assert (tmp_path / "page.html").read_text(encoding="utf-8") == page
    elements = parsed(page)
    csp = [attrs["content"] for tag, attrs in elements.tags
           if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'"]
    for tag, attrs in elements.tags:  # nothing that loads anything
        assert tag not in ("script", "link", "img", "iframe", "object", "embed"), tag
        assert "src" not in attrs and "href" not in attrs, (tag, attrs)
    assert "url(" not in page and "@import" not in page
    assert "<title>run &lt;me&gt;</title>" in page


PROGRAM = """\
def parse(line):
    return line.split(",")

def load(lines):
    return [parse(line) for line in lines]

def main():
    return len(load(["a,b", "<c>,d"] * 100))

print(main())
"""


def test_run_html_writes_the_page(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(PROGRAM)
    env = {"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "utf-8"}
    plain = subprocess.run([sys.executable, "prog.py"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    done = subprocess.run([sys.executable, "-m", "flowtrace_otel", "run", "--html", "out.html",
                           "prog.py", "x"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (plain.returncode, plain.stdout) == (0, "200\n")
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert "<title>flowtrace-otel run prog.py x</title>" in page
    heads = heads_of_html(page)
    assert heads[:3] == ["main()", "load(['a,b', '<c>,d', 'a,b', '<c>,d', 'a,b', '<c>,d', "
                                   "'a,b', '<c>,d', ...+192])", "parse('a,b')"]
    assert heads == heads_of_text(done.stderr)  # the tree it printed
    assert '<span class="ft-count">×195 folded</span>' in page
    assert re.search(r'title="main;load;parse\n[\d,]+ µs', html.unescape(page))


def test_run_show_imports_expands_the_import_group(tmp_path: Path) -> None:
    """--show-imports reaches the printed tree and the page."""
    (tmp_path / "helper.py").write_text("def setup():\n    return 1\n\nVALUE = setup()\n")
    (tmp_path / "prog.py").write_text("import helper\n\ndef main():\n    return helper.VALUE\n\n"
                                      "main()\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "utf-8"}
    base = [sys.executable, "-m", "flowtrace_otel", "run", "--no-timing", "--html", "out.html"]
    folded = subprocess.run([*base, "prog.py"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert folded.stderr.splitlines()[0] == "… 1 call made while importing modules, folded"
    assert "… 1 call made while importing modules, folded" in (
        tmp_path / "out.html").read_text()
    shown = subprocess.run([*base, "--show-imports", "prog.py"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.stderr.splitlines()[:2] == ["→ setup()", "→ main()"]
    assert heads_of_html((tmp_path / "out.html").read_text()) == ["setup()", "main()"]
