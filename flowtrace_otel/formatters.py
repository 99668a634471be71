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
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import IO

from flowtrace_otel.events import CallEvent

_RESET, _DIM, _BOLD, _RED, _CYAN = "\033[0m", "\033[2m", "\033[1m", "\033[31m", "\033[36m"


class _Style:
    """ANSI colour on or off."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.color else text


def _children(events: list[CallEvent]) -> tuple[list[CallEvent], dict[int, list[CallEvent]]]:
    """Roots (events whose parent is not in the list) and each event's children."""
    ids = {event.id for event in events}
    roots: list[CallEvent] = []
    kids: dict[int, list[CallEvent]] = {}
    for event in sorted(events, key=lambda e: e.id):
        if event.parent_id is None or event.parent_id not in ids:
            roots.append(event)
        else:
            kids.setdefault(event.parent_id, []).append(event)
    return roots, kids


def format_tree(events: Iterable[CallEvent], *, show_args: bool = True, show_result: bool = False,
                show_timing: bool = True, show_exc: bool = True, color: bool = False) -> str:
    """The call tree as text (see the module docstring for the notation)."""
    style = _Style(color)
    roots, kids = _children(list(events))
    lines: list[str] = []

    def where(event: CallEvent, parent: CallEvent | None) -> list[str]:
        """Task and thread tags, shown where they change."""
        tags: list[str] = []
        if event.task and (parent is None or parent.task != event.task):
            tags.append(style(_CYAN, f"{{task {event.task}}}"))
        if (parent is not None and parent.thread_id != event.thread_id) or (
                parent is None and event.thread_name != "MainThread"):
            tags.append(style(_CYAN, f"{{thread {event.thread_name}}}"))
        return tags

    def outcome(event: CallEvent) -> list[str]:
        """Result, exception, status and duration."""
        parts: list[str] = []
        if show_result and event.result_repr is not None and event.status == "returned":
            parts.append(f"→ {event.result_repr}")
        if show_exc and event.exc_type is not None:
            state = f" [{event.exc_state}]" if event.exc_state else ""
            message = f": {event.exc_msg}" if event.exc_msg else ""
            parts.append(style(_RED, f"raised {event.exc_type}{message}{state}"))
        if event.status in ("closed", "unfinished"):
            parts.append(f"[{event.status}]")
        if event.resumes:
            parts.append(f"(resumed {event.resumes}×)")
        if show_timing:
            parts.append(style(_DIM, f"[{event.duration:.6f}s]"))
        return parts

    def line(depth: int, arrow: str, head: str, parts: list[str]) -> None:
        lines.append("  " * depth + arrow + " " + " ".join([head, *parts]))

    def head_of(event: CallEvent) -> str:
        return f"{style(_BOLD, event.func_name)}({event.args_repr if show_args else ''})"

    # An explicit stack, not recursion: a tree may be as deep as the program's recursion.
    todo: list[tuple[CallEvent, CallEvent | None, int, bool]] = [
        (root, None, 0, False) for root in reversed(roots)]
    while todo:
        event, parent, depth, closing = todo.pop()
        if closing:
            line(depth, "←", head_of(event), outcome(event))
            continue
        children = kids.get(event.id)
        if not children:
            line(depth, "→", head_of(event), where(event, parent) + outcome(event))
            continue
        line(depth, "→", head_of(event), where(event, parent))
        todo.append((event, parent, depth, True))
        todo.extend((child, event, depth + 1, False) for child in reversed(children))
    return "\n".join(lines) + ("\n" if lines else "")


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
               show_result: bool = False, show_timing: bool = True, show_exc: bool = True) -> None:
    """Print the call tree to ``file`` (stdout by default), coloured on a terminal."""
    out = file if file is not None else sys.stdout
    out.write(format_tree(events, show_args=show_args, show_result=show_result,
                          show_timing=show_timing, show_exc=show_exc, color=_use_color(out)))
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
