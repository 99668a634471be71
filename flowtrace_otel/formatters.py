"""Human and machine output for a list of :class:`CallEvent`: the tree and JSON.

The tree, as FlowTrace prints it::

    → fib(3)
      → fib(2)
        → fib(1) [0.000013s]
        → fib(0) [0.000011s]
      ← fib(2) [0.000081s]
      → fib(1) [0.000009s]
    ← fib(3) [0.000143s]

A call without children is one line; a call with children opens with ``→`` and closes with
``←``. Exceptions show as ``raised Type: message [caught]`` or ``[propagated]`` (no ``:`` part
for an empty message); a call that runs
in another thread than its parent shows ``{thread NAME}``, a task's first coroutine
``{task NAME}``; generators and coroutines that were suspended show how often they resumed.
With ``links``, each call's first line ends with where the function is, ``shop.py:12``
(:mod:`flowtrace_otel.links`: plain text, or an OSC 8 hyperlink on a terminal).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

from flowtrace_otel import links as _links
from flowtrace_otel.events import CallEvent, folded_event, gc_paused
from flowtrace_otel.folding import Fold, Siblings

_RESET, _DIM, _BOLD, _RED, _CYAN = "\033[0m", "\033[2m", "\033[1m", "\033[31m", "\033[36m"


class _Style:
    """ANSI colour on or off."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.color else text


def _children(events: list[CallEvent]) -> tuple[
        list[CallEvent], list[CallEvent], dict[int, list[CallEvent]]]:
    """The events in start order, the roots (parent not in the list) and each one's children."""
    ids = [event.id for event in events]
    if ids != sorted(ids):  # timsort checks a sorted list in one pass
        events = sorted(events, key=lambda e: e.id)
    seen: set[int] = set()
    add = seen.add
    roots: list[CallEvent] = []
    kids: dict[int, list[CallEvent]] = {}
    for event in events:  # a parent starts, so comes, before its children
        parent = event.parent_id
        if parent is None or parent not in seen:
            roots.append(event)
        elif parent in kids:
            kids[parent].append(event)
        else:
            kids[parent] = [event]
        add(event.id)
    return events, roots, kids


class _Sizes:
    """Calls in each subtree (the event itself, folds and descendants), counted when first asked."""

    def __init__(self, events: list[CallEvent]) -> None:
        self.events = events
        self.known: dict[int, int] | None = None

    def get(self, event: CallEvent) -> int:
        """Calls in ``event``'s subtree."""
        known = self.known
        if known is None:
            known = self.known = {}
            get = known.get
            for each in reversed(self.events):  # children (later ids) before their parent
                size = get(each.id, 0) + (each.fold.calls if each.fold is not None else 1)
                known[each.id] = size
                parent = each.parent_id
                if parent is not None:
                    known[parent] = get(parent, 0) + size
        return known.get(event.id, event.calls)


def _function(event: CallEvent) -> tuple[str, str, int]:
    """What makes two calls calls of the same function."""
    return event.func_name, event.file, event.line


def fold_siblings(children: list[CallEvent], fold_after: int, sizes: _Sizes) -> list[CallEvent]:
    """``children`` of one parent (in start order) with repeated calls folded.

    The rule of :mod:`flowtrace_otel.folding`; events that already stand for folded calls (from
    a session) are merged into the aggregate of their function. The input is not modified.
    """
    if not fold_after or len(children) <= fold_after:
        return children
    siblings = Siblings(fold_after)
    out: list[CallEvent] = []
    shown: dict[tuple[str, str, int], CallEvent] = {}
    for child in children:
        key = _function(child)
        if child.fold is None and siblings.admit(key, child.status == "raised"
                                                 and child.exc_type is not None):
            out.append(child)
            continue
        fold, new = siblings.fold(key)
        if child.fold is not None:
            fold.merge(child.fold)
        else:
            fold.add(child.end_ns - child.start_ns, sizes.get(child) - 1)
        if new:
            shown[key] = line = folded_event(child, fold)
            out.append(line)
        else:
            line = shown[key]
            line.end_ns = max(line.end_ns, child.end_ns)
    return out


def _count(n: int) -> str:
    """``1,234``."""
    return f"{n:,}"


def _calls(n: int) -> str:
    """``1 call``, ``1,234 calls``."""
    return f"{n:,} call" if n == 1 else f"{n:,} calls"


def format_tree(events: Iterable[CallEvent], *, show_args: bool = True, show_result: bool = False,
                show_timing: bool = True, show_exc: bool = True, color: bool = False,
                fold_after: int = 5, max_lines: int = 2000, show_imports: bool = False,
                links: bool | str = False) -> str:
    """The call tree as text (see the module docstring for the notation).

    Under one parent, calls of a function past the first ``fold_after`` are folded into one
    line (0: no folding); at most ``max_lines`` lines are printed (0: all; plus the closing
    lines of the calls open at the cut) and every place where calls were left out says so;
    calls made while importing modules are one folded line unless ``show_imports``.
    ``links``: True (or ``"plain"``) ends each call's first line with ``path:line``,
    ``"osc8"`` with an OSC 8 hyperlink showing ``file:line``.
    """
    style = _links.style_of(links)
    linker = _links.Linker(style) if style else None
    with gc_paused():
        return _render(list(events), show_args, show_result, show_timing, show_exc, color,
                       fold_after, max_lines, show_imports, linker)


def _render(event_list: list[CallEvent], show_args: bool, show_result: bool, show_timing: bool,
            show_exc: bool, color: bool, fold_after: int, max_lines: int,
            show_imports: bool, linker: _links.Linker | None) -> str:
    """:func:`format_tree`'s work."""
    style = _Style(color)
    tree = TreeRows(event_list, fold_after=fold_after, max_lines=max_lines,
                    show_imports=show_imports)
    lines: list[str] = []

    def where(event: CallEvent, parent: CallEvent | None) -> list[str]:
        """Task and thread tags, shown where they change."""
        return [style(_CYAN, tag) for tag in place_tags(event, parent)]

    def outcome(event: CallEvent) -> list[str]:
        """Result, exception, status and duration."""
        parts: list[str] = []
        if show_result and event.result_repr is not None and event.status == "returned":
            parts.append(f"→ {event.result_repr}")
        if show_exc and event.exc_type is not None:
            parts.append(style(_RED, exception_text(event)))
        if event.status in ("closed", "unfinished"):
            parts.append(f"[{event.status}]")
        if event.resumes:
            parts.append(f"(resumed {event.resumes}×)")
        if show_timing:
            parts.append(style(_DIM, f"[{event.duration:.6f}s]"))
        return parts

    def folded(fold: Fold) -> list[str]:
        """What a folded line stands for: the count, calls inside, and the durations."""
        parts = [f"×{_count(fold.count)} folded"]
        if fold.inside:
            parts.append(f"(+{_calls(fold.inside)} inside)")
        if fold.raised and show_exc:
            parts.append(style(_RED, f"{_count(fold.raised)} raised"))
        if show_timing:
            parts.append(style(_DIM, fold_timing(fold)))
        return parts

    def line(depth: int, arrow: str, head: str, parts: list[str]) -> None:
        lines.append("  " * depth + arrow + " " + " ".join([head, *parts]))

    def link(event: CallEvent) -> list[str]:
        """Where the function is, for a call's first line (nothing without links)."""
        if linker is None:
            return []
        text = linker(event.file, event.line)
        return [style(_DIM, text)] if text else []

    def head_of(event: CallEvent) -> str:
        args = event.args_repr if show_args or event.fold is not None else ""
        return f"{style(_BOLD, event.func_name)}({args})"

    for kind, depth, event, parent, group in tree.rows():
        if kind == CUT:
            lines.append("  " * depth + style(_DIM, tree.cut_text(group)))
        elif kind == IMPORTS:
            calls, total = tree.imports_summary(group)
            timing = style(_DIM, f" [total {total / 1e9:.6f}s]") if show_timing else ""
            lines.append(style(_DIM, f"… {_calls(calls)} made while importing modules, "
                                     f"folded{timing}"))
        elif kind == CLOSE:
            line(depth, "←", head_of(event), outcome(event))
        elif kind == FOLD:
            assert event.fold is not None
            line(depth, "→", head_of(event),
                 where(event, parent) + folded(event.fold) + link(event))
        elif kind == LEAF:
            line(depth, "→", head_of(event), where(event, parent) + outcome(event) + link(event))
        else:
            line(depth, "→", head_of(event), where(event, parent) + link(event))
    return "\n".join(lines) + ("\n" if lines else "")


#: the kinds of :class:`Row`: the folded import-time group, a call that has children (its
#: opening and its closing), a call without children, folded calls, and calls left out at
#: the line limit
IMPORTS, OPEN, CLOSE, LEAF, FOLD, CUT = "imports", "open", "close", "leaf", "fold", "cut"


#: One line of the tree, before it is written as text or HTML: (kind, depth, event, parent,
#: calls). ``event`` is the call (for IMPORTS and CUT: the first of ``calls``); ``calls`` are
#: the import-time roots (IMPORTS) or the calls left out (CUT), else empty. A plain tuple:
#: a tree can have tens of thousands of rows.
Row = tuple[str, int, CallEvent, CallEvent | None, Sequence[CallEvent]]
_NONE: tuple[CallEvent, ...] = ()


class TreeRows:
    """The rows of a call tree: what every renderer of the tree (text, HTML) walks.

    One walk for all of them, so they fold, cut and group import-time calls alike: repeated
    calls folded (:func:`fold_siblings`), at most ``max_lines`` rows before the calls left
    out are marked in place (0: all; the closing rows of calls open at the cut come on top),
    calls made while importing modules as one row unless ``show_imports``.
    """

    def __init__(self, events: Iterable[CallEvent], *, fold_after: int = 5,
                 max_lines: int = 2000, show_imports: bool = False) -> None:
        """Index ``events`` (any order) by parent."""
        self.events, self.roots, self.kids = _children(list(events))
        self.sizes = _Sizes(self.events)
        self.fold_after = fold_after
        self.max_lines = max_lines
        self.show_imports = show_imports

    def calls_in(self, event: CallEvent) -> int:
        """Calls in ``event``'s subtree (itself, folds and descendants)."""
        return self.sizes.get(event)

    def cut_text(self, left: Sequence[CallEvent]) -> str:
        """The marker for calls left out at the line limit: how many, of which functions."""
        total = sum(self.sizes.get(event) for event in left)
        by_name: dict[str, int] = {}
        for event in left:
            count = event.fold.count if event.fold is not None else 1
            by_name[event.func_name] = by_name.get(event.func_name, 0) + count
        names = sorted(by_name.items(), key=lambda item: -item[1])
        shown = ", ".join(f"{name}() ×{_count(n)}" for name, n in names[:3])
        more = ", …" if len(names) > 3 else ""
        direct = sum(by_name.values())
        inside = f" and {_calls(total - direct)} inside" if total > direct else ""
        noun = "call" if total == 1 else "calls"
        return f"… {_count(total)} more {noun} not shown (max_lines): {shown}{more}{inside}"

    def imports_summary(self, imports: Sequence[CallEvent]) -> tuple[int, int]:
        """Calls made while importing modules, and their total duration in nanoseconds."""
        calls = sum(self.sizes.get(root) for root in imports)
        total = sum(root.end_ns - root.start_ns if root.fold is None else root.fold.total_ns
                    for root in imports)
        return calls, total

    def rows(self) -> Iterator[Row]:
        """The rows in order (a call's opening row, its children's rows, its closing row)."""
        fold_after, sizes = self.fold_after, self.sizes
        visible = self.roots
        imports = [root for root in self.roots if root.import_time]
        if imports and not self.show_imports:
            visible = [root for root in self.roots if not root.import_time]
            yield (IMPORTS, 0, imports[0], None, imports)
        budget = self.max_lines or -1
        # An explicit stack, not recursion: a tree may be as deep as the program's recursion.
        # Entries: (event, parent, depth, closing)
        todo: list[tuple[CallEvent, CallEvent | None, int, bool]] = [
            (root, None, 0, False) for root in reversed(fold_siblings(visible, fold_after, sizes))]
        left: list[CallEvent] = []
        left_depth = 0
        while todo:
            event, parent, depth, closing = todo.pop()
            if budget == 0 and not closing:  # past the limit: gather what is left at this depth
                if left and depth != left_depth:
                    yield (CUT, left_depth, left[0], None, left)
                    left = []
                left.append(event)
                left_depth = depth
                continue
            if left:
                yield (CUT, left_depth, left[0], None, left)
                left = []
            if closing:  # closing rows count too; those of the calls open at a cut are extra
                yield CLOSE, depth, event, parent, _NONE
                budget -= budget > 0
                continue
            budget -= 1
            if event.fold is not None:
                yield FOLD, depth, event, parent, _NONE
                continue
            children = self.kids.get(event.id)
            if not children:
                yield LEAF, depth, event, parent, _NONE
                continue
            yield OPEN, depth, event, parent, _NONE
            todo.append((event, parent, depth, True))
            todo.extend((child, event, depth + 1, False)
                        for child in reversed(fold_siblings(children, fold_after, sizes)))
        if left:
            yield (CUT, left_depth, left[0], None, left)


def place_tags(event: CallEvent, parent: CallEvent | None) -> list[str]:
    """``{task NAME}`` and ``{thread NAME}``, where the call's task or thread differs."""
    tags: list[str] = []
    if event.task and (parent is None or parent.task != event.task):
        tags.append(f"{{task {event.task}}}")
    if (parent is not None and parent.thread_id != event.thread_id) or (
            parent is None and event.thread_name != "MainThread"):
        tags.append(f"{{thread {event.thread_name}}}")
    return tags


def _one_line(text: str) -> str:
    """The first line of a message, with ``…`` when more lines follow (a tree line is one line)."""
    first, newline, _ = text.partition("\n")
    return f"{first.rstrip()} …" if newline else first


def exception_text(event: CallEvent) -> str:
    """``raised Type: message [caught]`` (no ``:`` part for an empty message)."""
    state = f" [{event.exc_state}]" if event.exc_state else ""
    message = f": {_one_line(event.exc_msg)}" if event.exc_msg else ""
    return f"raised {event.exc_type}{message}{state}"


def fold_timing(fold: Fold) -> str:
    """``[total 0.000412s, min 0.000001s, max 0.000009s]``."""
    return (f"[total {fold.total_ns / 1e9:.6f}s, min {fold.min_ns / 1e9:.6f}s, "
            f"max {fold.max_ns / 1e9:.6f}s]")


def _use_color(file: IO[str]) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (to a non-empty value)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:
        return False


def print_tree(events: Iterable[CallEvent], file: IO[str] | None = None, *, show_args: bool = True,
               show_result: bool = False, show_timing: bool = True, show_exc: bool = True,
               fold_after: int = 5, max_lines: int = 2000, show_imports: bool = False,
               links: bool | None = None) -> None:
    """Print the call tree to ``file`` (stdout by default), coloured on a terminal.

    ``links``: each call's ``file:line``; by default only on a terminal (an OSC 8 hyperlink
    where the terminal shows them and ``NO_COLOR`` is unset, plain text otherwise); True puts
    them into any output (plain ``path:line`` unless a terminal shows hyperlinks), False never.
    """
    out = file if file is not None else sys.stdout
    out.write(format_tree(events, show_args=show_args, show_result=show_result,
                          show_timing=show_timing, show_exc=show_exc, color=_use_color(out),
                          fold_after=fold_after, max_lines=max_lines, show_imports=show_imports,
                          links=_links.style_for(out, links)))
    flush = getattr(out, "flush", None)
    if flush is not None:
        flush()


def to_json(events: Iterable[CallEvent], path: str | os.PathLike[str] | None = None,
            indent: int | None = 2) -> str:
    """The events as a JSON array of objects; also written to ``path`` when given."""
    text = json.dumps([event.to_dict() for event in events], indent=indent, ensure_ascii=False)
    if path is not None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return text


def write_json(events: Iterable[CallEvent], path: str | os.PathLike[str]) -> None:
    """Write the events to ``path`` as JSON."""
    to_json(events, path)
