"""The call tree as HTML: a collapsible tree for notebooks, and a self-contained page.

* :func:`tree_html`: the tree the CLI prints (the same rows from
  :class:`~flowtrace_otel.formatters.TreeRows`: the same folding, cut markers and import-time
  group) as nested ``<details>``/``<summary>`` elements, collapsible without JavaScript, with
  arguments, results, durations, exceptions and folded counts, and a scoped stylesheet that
  reads well on light and dark themes.
* :func:`flame_html`: a flame view (icicle: callers above callees) of the folded stacks of
  :func:`~flowtrace_otel.exports.to_folded`, as positioned boxes, each with a tooltip.
* :func:`to_html`: one page with both, that loads nothing from anywhere (its
  Content-Security-Policy forbids it, and scripts).
* :class:`TreeView`: what the notebook magic displays: HTML in a notebook, the text tree in a
  terminal.

Every value shown comes from the traced program and is escaped.
"""

from __future__ import annotations

import html
import os
import re
import zlib
from collections.abc import Iterable, Sequence

from flowtrace_otel._html_style import CSS
from flowtrace_otel.events import CallEvent, gc_paused
from flowtrace_otel.exports import to_folded
from flowtrace_otel.folding import Fold
from flowtrace_otel.formatters import (
    CLOSE,
    CUT,
    FOLD,
    IMPORTS,
    LEAF,
    Row,
    TreeRows,
    exception_text,
    format_tree,
    place_tags,
)

__all__ = ["TreeView", "flame_html", "to_html", "tree_html"]

#: a tree with at most this many rows opens all its nodes; a bigger one opens the top two levels
OPEN_ALL_ROWS = 200


def _e(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def human_duration(ns: int) -> str:
    """``420 ns``, ``12.5 µs``, ``3.20 ms``, ``1.234 s``."""
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.3f} s"


def _calls(n: int) -> str:
    """``1 call``, ``1,234 calls``."""
    return f"{n:,} call" if n == 1 else f"{n:,} calls"


class _RowHtml:
    """Writes the rows of a tree as HTML with the display switches of :func:`tree_html`."""

    def __init__(self, show_args: bool, show_result: bool, show_timing: bool,
                 show_exc: bool) -> None:
        self.show_args = show_args
        self.show_result = show_result
        self.show_timing = show_timing
        self.show_exc = show_exc

    def head(self, event: CallEvent) -> str:
        """``name(args)``, the name's tooltip telling the module and file:line."""
        args = event.args_repr if self.show_args or event.fold is not None else ""
        where = f"{event.module}.{event.func_name}".lstrip(".")
        return (f'<span class="ft-fn" title="{_e(where)} — {_e(event.file)}:{event.line}">'
                f'{_e(event.func_name)}</span>(<span class="ft-args">{_e(args)}</span>)')

    def tags(self, event: CallEvent, parent: CallEvent | None) -> str:
        """Thread and task tags where they change."""
        return "".join(f' <span class="ft-tag">{_e(tag)}</span>'
                       for tag in place_tags(event, parent))

    def outcome(self, event: CallEvent) -> str:
        """Result, exception, status, resumes and duration."""
        parts: list[str] = []
        if self.show_result and event.result_repr is not None and event.status == "returned":
            parts.append(f'<span class="ft-res">→ {_e(event.result_repr)}</span>')
        if self.show_exc and event.exc_type is not None:
            parts.append(f'<span class="ft-exc">{_e(exception_text(event))}</span>')
        if event.status in ("closed", "unfinished"):
            parts.append(f'<span class="ft-status">[{_e(event.status)}]</span>')
        if event.resumes:
            parts.append(f'<span class="ft-status">(resumed {event.resumes}×)</span>')
        if self.show_timing:
            parts.append(f'<span class="ft-dur">{human_duration(event.end_ns - event.start_ns)}'
                         '</span>')
        return "".join(" " + part for part in parts)

    def folded(self, fold: Fold) -> str:
        """What a folded row stands for: the count, calls inside, and the durations."""
        parts = [f'<span class="ft-count">×{fold.count:,} folded</span>']
        if fold.inside:
            parts.append(f"(+{_calls(fold.inside)} inside)")
        if fold.raised and self.show_exc:
            parts.append(f'<span class="ft-exc">{fold.raised:,} raised</span>')
        if self.show_timing:
            parts.append(f'<span class="ft-dur">total {human_duration(fold.total_ns)}, min '
                         f'{human_duration(fold.min_ns)}, max {human_duration(fold.max_ns)}'
                         '</span>')
        return "".join(" " + part for part in parts)

    def marks(self, event: CallEvent) -> str:
        """CSS classes for how the call ended."""
        if self.show_exc and event.exc_type is not None:
            return " ft-raised ft-" + _e(event.exc_state or "raised")
        return ""


def _rows_html(tree: TreeRows, rows: Sequence[Row], out: _RowHtml, open_depth: int,
               show_timing: bool) -> list[str]:
    """The HTML of ``rows``, in order."""
    parts: list[str] = []
    add = parts.append
    for kind, depth, event, parent, group in rows:
        if kind == CLOSE:
            add("</details>")
        elif kind == CUT:
            add(f'<div class="ft-cut">{_e(tree.cut_text(group))}</div>')
        elif kind == IMPORTS:
            calls, total = tree.imports_summary(group)
            timing = f" [total {human_duration(total)}]" if show_timing else ""
            add(f'<div class="ft-imports">… {_calls(calls)} made while importing modules, '
                f"folded{_e(timing)}</div>")
        elif kind == FOLD:
            assert event.fold is not None
            add(f'<div class="ft-call ft-fold">→ {out.head(event)}'
                f"{out.tags(event, parent)}{out.folded(event.fold)}</div>")
        elif kind == LEAF:
            add(f'<div class="ft-call{out.marks(event)}">→ {out.head(event)}'
                f"{out.tags(event, parent)}{out.outcome(event)}</div>")
        else:  # OPEN
            opened = " open" if depth < open_depth else ""
            add(f'<details class="ft-node{out.marks(event)}"{opened}><summary>'
                f"{out.head(event)}{out.tags(event, parent)}{out.outcome(event)}</summary>")
    return parts


def _linked(text: str) -> str:
    """``text`` escaped, its http(s) addresses made links."""
    escaped = _e(text)
    return re.sub(r"https?://[^\s<>&\"']+",
                  lambda m: f'<a href="{m.group(0)}" target="_blank" rel="noopener">'
                            f"{m.group(0)}</a>", escaped)


def tree_html(events: Iterable[CallEvent], *, show_args: bool = True, show_result: bool = True,
              show_timing: bool = True, show_exc: bool = True, fold_after: int = 5,
              max_lines: int = 2000, show_imports: bool = False, open_depth: int | None = None,
              notes: Sequence[str] = (), style: bool = True) -> str:
    """The call tree as an HTML fragment (``<div class="flowtrace-otel">``, styles included).

    The rows are those of :func:`~flowtrace_otel.formatters.format_tree` with the same
    ``fold_after``, ``max_lines`` and ``show_imports``. Calls that have children are
    ``<details>`` elements, open down to ``open_depth`` (default: all of them for a tree of at
    most 200 rows, else the first two levels). ``notes`` are lines shown under the tree
    (their web addresses become links); ``style=False`` leaves out the ``<style>`` element.
    """
    with gc_paused():
        event_list = list(events)
        tree = TreeRows(event_list, fold_after=fold_after, max_lines=max_lines,
                        show_imports=show_imports)
        rows = list(tree.rows())
        if open_depth is None:
            open_depth = 1 << 30 if len(rows) <= OPEN_ALL_ROWS else 2
        out = _RowHtml(show_args, show_result, show_timing, show_exc)
        body = _rows_html(tree, rows, out, open_depth, show_timing)
    calls = sum(event.calls for event in event_list)
    head = ""
    if event_list:
        span = (max(event.end_ns for event in event_list)
                - min(event.start_ns for event in event_list))
        timing = f" in {human_duration(span)}" if show_timing else ""
        head = f'<div class="ft-head">flowtrace: {_calls(calls)}{timing}</div>'
    notes_html = ""
    if notes:
        notes_html = ('<div class="ft-notes">'
                      + "<br>".join(_linked(note) for note in notes) + "</div>")
    css = f"<style>{CSS}</style>" if style else ""
    return (f'<div class="flowtrace-otel">{css}{head}<div class="ft-tree">'
            + "".join(body) + f"</div>{notes_html}</div>")


class _Frame:
    """One node of the flame view: a call path's own time and its callees."""

    __slots__ = ("kids", "name", "own")

    def __init__(self, name: str) -> None:
        self.name = name
        self.own = 0
        self.kids: dict[str, _Frame] = {}


def _flame_tree(folded: str) -> _Frame:
    """The folded stacks (``a;b;c 12``) as a tree of frames under ``all``."""
    root = _Frame("all")
    for line in folded.splitlines():
        stack, _, value = line.rpartition(" ")
        node = root
        for name in stack.split(";"):
            kid = node.kids.get(name)
            if kid is None:
                kid = node.kids[name] = _Frame(name)
            node = kid
        node.own += int(value)
    return root


def _totals(root: _Frame) -> dict[int, int]:
    """Each frame's total (own time plus its callees'), keyed by ``id``."""
    order: list[_Frame] = []
    todo = [root]
    while todo:
        node = todo.pop()
        order.append(node)
        todo.extend(node.kids.values())
    totals: dict[int, int] = {}
    for node in reversed(order):  # callees before their callers
        totals[id(node)] = node.own + sum(totals[id(kid)] for kid in node.kids.values())
    return totals


def _colour(name: str) -> str:
    """A warm colour fixed by the name (grey for the import group)."""
    if name == "<import>":
        return "hsl(210, 10%, 72%)"
    value = zlib.crc32(name.encode("utf-8", "replace"))
    return f"hsl({value % 55}, {70 + value // 55 % 20}%, {60 + value // 1100 % 12}%)"


def flame_html(events: Iterable[CallEvent], min_width: float = 0.1) -> str:
    """A flame view of ``events`` (callers above callees, widths by time) as HTML boxes.

    Built from :func:`~flowtrace_otel.exports.to_folded` (self times in microseconds); a box
    narrower than ``min_width`` percent of the whole is left out, and the count of those is
    said under the view.
    """
    root = _flame_tree(to_folded(events))
    totals = _totals(root)
    whole = totals[id(root)]
    if not whole:
        return '<div class="ft-notes">no time recorded for a flame view</div>'
    boxes: list[str] = []
    hidden = 0
    depth_max = 0
    todo: list[tuple[_Frame, int, int, str]] = [(root, 0, 0, "all")]  # node, start, depth, path
    while todo:
        node, start, depth, path = todo.pop()
        total = totals[id(node)]
        width = 100 * total / whole
        if width < min_width:
            hidden += 1
            continue
        depth_max = max(depth_max, depth)
        share = f"{100 * total / whole:.1f}%"
        tip = (f"{path}\n{total:,} µs ({share}), own {node.own:,} µs" if depth
               else f"all: {total:,} µs")
        boxes.append(f'<div class="ft-fb" style="left:{100 * start / whole:.4f}%;'
                     f"width:{width:.4f}%;top:{depth * 1.4:.1f}em;"
                     f'background:{_colour(node.name)}" title="{_e(tip)}">{_e(node.name)}</div>')
        offset = start
        for name in sorted(node.kids):  # as flamegraph.pl: callees in name order
            kid = node.kids[name]
            todo.append((kid, offset, depth + 1, f"{path};{name}" if depth else name))
            offset += totals[id(kid)]
    note = (f'<div class="ft-notes">{hidden:,} frames under {min_width}% of the time '
            "are not drawn</div>" if hidden else "")
    return (f'<div class="ft-flame" style="height:{(depth_max + 1) * 1.4:.1f}em">'
            + "".join(boxes) + "</div>" + note)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="generator" content="flowtrace-otel">
<title>{title}</title>
<style>{css}</style>
</head>
<body class="flowtrace-otel ft-page">
<h1>{title}</h1>
<h2>Flame view</h2>
<div class="ft-head">callers above callees; width = time (self time summed per call path, as
in the folded stacks); hover a box for its figures</div>
{flame}
<h2>Call tree</h2>
{tree}
</body>
</html>
"""


def to_html(events: Iterable[CallEvent], path: str | os.PathLike[str] | None = None, *,
            title: str = "flowtrace-otel", show_args: bool = True, show_result: bool = True,
            show_timing: bool = True, show_exc: bool = True, fold_after: int = 5,
            max_lines: int = 2000, show_imports: bool = False,
            notes: Sequence[str] = ()) -> str:
    """One self-contained HTML page: a flame view and the collapsible call tree.

    The page fetches nothing and runs no script; it is also written to ``path`` if given.
    The tree options are those of :func:`tree_html`.
    """
    event_list = list(events)
    tree = tree_html(event_list, show_args=show_args, show_result=show_result,
                     show_timing=show_timing, show_exc=show_exc, fold_after=fold_after,
                     max_lines=max_lines, show_imports=show_imports, notes=notes, style=False)
    page = _PAGE.format(title=_e(title), css=CSS, flame=flame_html(event_list), tree=tree)
    if path is not None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(page)
    return page


class TreeView:
    """A call tree to display: HTML in a notebook (``_repr_html_``), text in a terminal."""

    def __init__(self, events: Iterable[CallEvent], *, notes: Sequence[str] = (),
                 show_args: bool = True, show_result: bool = False, show_timing: bool = True,
                 show_exc: bool = True, fold_after: int = 5, max_lines: int = 2000,
                 show_imports: bool = False) -> None:
        """Keep ``events`` and the options (``show_result``: text only; HTML always shows them)."""
        self.events = list(events)
        self.notes = list(notes)
        self.show_args = show_args
        self.show_result = show_result
        self.show_timing = show_timing
        self.show_exc = show_exc
        self.fold_after = fold_after
        self.max_lines = max_lines
        self.show_imports = show_imports

    def _repr_html_(self) -> str:
        """The tree as HTML (IPython's rich display)."""
        return tree_html(self.events, show_args=self.show_args, show_result=True,
                         show_timing=self.show_timing, show_exc=self.show_exc,
                         fold_after=self.fold_after, max_lines=self.max_lines,
                         show_imports=self.show_imports, notes=self.notes)

    def __repr__(self) -> str:
        """The tree as the CLI prints it (no colour), then the notes."""
        text = format_tree(self.events, show_args=self.show_args, show_result=self.show_result,
                           show_timing=self.show_timing, show_exc=self.show_exc,
                           fold_after=self.fold_after, max_lines=self.max_lines,
                           show_imports=self.show_imports)
        return text + "".join(note + "\n" for note in self.notes)
