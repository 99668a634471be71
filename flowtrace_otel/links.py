"""``file:line`` on tree lines, for terminals and editors to open: plain text or OSC 8 hyperlinks.

A *plain* link is the text ``path:line`` (relative to the current folder when the file is in
it): terminals such as VS Code's, iTerm2's and many editors' output panes make such text
clickable. An *OSC 8* link is an escape sequence that terminals show as the text ``file:line``
(the file's name, or its path relative to the current folder) and open as
``file://HOST/absolute/path#LINE`` (the line as the fragment, as kitty and VS Code read it).

Which kind a terminal gets is decided once per tree: hyperlinks only on a terminal known to
support them (or with ``FORCE_HYPERLINK=1``) and without ``NO_COLOR``; plain text otherwise.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Mapping
from typing import IO

#: link styles: no links, ``path:line`` text, OSC 8 hyperlinks
OFF, PLAIN, OSC8 = "", "plain", "osc8"

_OSC8_OPEN, _OSC8_CLOSE = "\033]8;;", "\033\\"
#: ``TERM_PROGRAM`` values of terminals that show OSC 8 hyperlinks
_HYPERLINK_PROGRAMS = frozenset({"iTerm.app", "WezTerm", "vscode", "ghostty", "Hyper", "Tabby",
                                 "rio", "kitty"})
_HYPERLINK_TERMS = ("xterm-kitty", "alacritty", "foot", "wezterm", "xterm-ghostty", "contour")


def style_of(links: bool | str) -> str:
    """The link style for ``format_tree``'s ``links`` argument (True means plain text)."""
    if links is True:
        return PLAIN
    if links is False or links == OFF:
        return OFF
    if links in (PLAIN, OSC8):
        return str(links)
    raise ValueError(f"links must be True, False, {PLAIN!r} or {OSC8!r}, not {links!r}")


def _isatty(file: IO[str]) -> bool:
    """True when ``file`` is a terminal (a closed or odd stream is not)."""
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:
        return False


def style_for(file: IO[str], links: bool | None, environ: Mapping[str, str] | None = None) -> str:
    """The link style for printing to ``file``.

    ``links`` None (the default) means on for a terminal, off otherwise; True forces them on
    (plain text where hyperlinks are not known to work), False off. Hyperlinks only on a
    terminal that supports them and without ``NO_COLOR`` (an escape sequence all the same).
    """
    env = os.environ if environ is None else environ
    tty = _isatty(file)
    if links is False or (links is None and not tty):
        return OFF
    if tty and not env.get("NO_COLOR") and terminal_has_hyperlinks(env):
        return OSC8
    return PLAIN


def terminal_has_hyperlinks(environ: Mapping[str, str]) -> bool:
    """Whether the terminal described by ``environ`` shows OSC 8 hyperlinks.

    ``FORCE_HYPERLINK=1`` (or ``0``) decides, as for other tools that print hyperlinks;
    otherwise the terminals known to support them are recognised by their variables.
    """
    force = environ.get("FORCE_HYPERLINK")
    if force is not None:
        return force.strip() not in ("", "0")
    term = environ.get("TERM", "")
    if term == "dumb":
        return False
    if environ.get("TERM_PROGRAM") in _HYPERLINK_PROGRAMS or term.startswith(_HYPERLINK_TERMS):
        return True
    if environ.get("WT_SESSION") or environ.get("KONSOLE_VERSION") or environ.get("DOMTERM"):
        return True
    vte = environ.get("VTE_VERSION", "")
    return vte.isdigit() and int(vte) >= 5000  # GNOME Terminal, Tilix, ... (VTE 0.50+)


class Linker:
    """Makes the link of a file and line in one style, with the host and folder read once."""

    def __init__(self, style: str) -> None:
        """``style``: :data:`PLAIN` or :data:`OSC8`."""
        self.style = style
        self.cwd = os.getcwd() + os.sep
        self.host = socket.gethostname() if style == OSC8 else ""

    def __call__(self, file: str, line: int) -> str:
        """The link to ``file`` at ``line``; empty for code without a file (``<string>``)."""
        if not file or file.startswith("<"):
            return ""
        path = os.path.abspath(file)
        shown = path[len(self.cwd):] if path.startswith(self.cwd) else path
        if self.style != OSC8:
            return f"{shown}:{line}"
        if shown == path:  # outside the current folder: the name is enough to read
            shown = os.path.basename(path)
        url = f"file://{self.host}{urllib.parse.quote(path)}#{line}"
        return f"{_OSC8_OPEN}{url}{_OSC8_CLOSE}{shown}:{line}{_OSC8_OPEN}{_OSC8_CLOSE}"
