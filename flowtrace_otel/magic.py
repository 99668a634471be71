"""IPython and Jupyter: ``%%flowtrace`` traces a cell, ``%flowtrace`` a line, and shows the tree.

Loaded by ``%load_ext flowtrace_otel`` (:func:`flowtrace_otel.load_ipython_extension`); this is
the only module of the package that imports IPython.

A ``%%flowtrace [options]`` cell runs as IPython runs any cell: an input transformer turns the
magic's line into a call that starts tracing (:class:`MagicLine`), and IPython's
``post_execute`` event stops it. So the cell's output, its value (``Out[n]``), its exception
and the traceback IPython shows for it, top-level ``await`` and nested magics are what they
are without the magic. Then the tree is displayed: HTML in a notebook, text in a terminal.

The options are the ``flowtrace-otel run`` options (read off the CLI's parser). With
``FLOWTRACE_OTEL=1``, an OTLP endpoint variable or ``--otel``, the cell's calls are also
exported as spans and the trace links are shown, as the CLI prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import linecache
import os
import re
import shlex
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, needs_local_scope
from IPython.display import display

from flowtrace_otel import cli
from flowtrace_otel.events import CallEvent
from flowtrace_otel.filters import GENERATED, Counts, counts_of, why_nothing_recorded
from flowtrace_otel.html import TreeView
from flowtrace_otel.monitoring import ToolIdTaken
from flowtrace_otel.session import TraceSession, TracingConflict

#: ``run`` options that make no sense for a cell: the program to run and its arguments
NOT_FOR_CELLS = frozenset({"help", "module", "target", "args"})

#: packages the shell itself runs around a cell (seen here in IPython and ipykernel): what
#: they leave out is not the cell's
SHELL_PACKAGES = frozenset({
    "IPython", "ipykernel", "traitlets", "jupyter_client", "jupyter_core", "zmq", "tornado",
    "comm", "prompt_toolkit", "pygments", "stack_data", "executing", "asttokens", "jedi",
    "parso", "decorator", "matplotlib_inline", "debugpy", "psutil", "asyncio", "selectors",
    "abc", "ast", "codeop", "collections", "contextlib", "importlib", "inspect", "linecache",
    "threading", "tokenize", "traceback", "typing", "warnings", "weakref",
    # a notebook's kernel sending a cell's value: signed JSON messages
    "json", "hmac", "hashlib", "enum", "queue", "dateutil", "datetime", "uuid",
    # weak-reference callbacks (a WeakSet's ``_remove``) that the garbage collector runs in
    # whatever code is running when it collects: not what the cell ran
    "_weakrefset",
})

_MAGIC_LINE = re.compile(r"%%flowtrace(?:[ \t]+(?P<options>.*))?\r?\n?\Z")
_SHOWN_TRACE_ID = re.compile(r"trace ([0-9a-f]{32})")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are IPython usage errors, not exits."""

    def error(self, message: str) -> Any:
        """Say what is wrong with the options, as IPython says it for its own magics."""
        raise UsageError(f"%flowtrace: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        """``--help`` printed its text: stop there without running anything."""
        if message:
            print(message, file=sys.stderr)
        raise _HelpShown()


class _HelpShown(Exception):
    """``--help`` was asked for: the cell does not run."""


def build_parser() -> argparse.ArgumentParser:
    """The magic's options: those of ``flowtrace-otel run`` but the program and its arguments."""
    run = cli._subparser(cli.build_parser(), "run")
    parser = _Parser(
        prog="%%flowtrace", add_help=True, allow_abbrev=False,
        usage="%%%%flowtrace [options]  (a cell)  |  %%flowtrace [options] statement  (a line)",
        description="Trace the calls of your code in the cell (or the statement) and show "
                    "their tree. The options are those of `flowtrace-otel run`.")
    for action in run._actions:
        if action.dest not in NOT_FOR_CELLS:
            parser._add_action(action)
    return parser


def valued_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    """Option strings that take a value."""
    return frozenset(option for action in parser._actions if action.nargs != 0
                     for option in action.option_strings)


def split_line(line: str, valued: frozenset[str]) -> tuple[list[str], str]:
    """``%flowtrace``'s line as (options, the statement): options come first, ``--`` ends them."""
    options: list[str] = []
    rest = line.strip()
    wants_value = False
    while rest:
        match = re.match(r"""(?:'[^']*'|"[^"]*"|[^\s'"])+""", rest)
        if match is None or not (wants_value or rest.startswith("-")):
            break
        token = match.group(0)
        if token == "--" and not wants_value:
            rest = rest[match.end():].strip()
            break
        options.extend(shlex.split(token))
        wants_value = not wants_value and token in valued
        rest = rest[match.end():].strip()
    return options, rest


def _magic_options(raw_cell: str, parser: argparse.ArgumentParser) -> argparse.Namespace | None:
    """The options of a cell that starts with ``%%flowtrace``, or None (not one, or invalid)."""
    first, _, body = raw_cell.lstrip("\r\n").partition("\n")
    match = _MAGIC_LINE.match(first)
    if match is None or not body.strip():
        return None
    try:
        return parser.parse_args(shlex.split(match.group("options") or ""))
    except (UsageError, _HelpShown, ValueError):
        return None  # left to the magic itself, which says what is wrong


def _shell_packages() -> frozenset[str]:
    """The shell's packages plus the top-level packages on the stack now (the shell's own)."""
    found = set(SHELL_PACKAGES)
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if isinstance(name, str) and name != "__main__":
            found.add(name.split(".")[0])
        frame = frame.f_back  # type: ignore[assignment]
    return frozenset(found)


class CellTrace:
    """One traced cell or line: the session, the spans' bridge if exporting, the display."""

    def __init__(self, ns: argparse.Namespace, title: str) -> None:
        """Start tracing with the options in ``ns`` (CannotTrace if another tool holds on)."""
        self.ns = ns
        ns.html_title = title
        options = cli._options(ns)
        self.session = TraceSession(**options)
        self.session.explain_empty = False  # said in the display, with the magic's options
        self.bridge: Any = None
        self.exporting = False
        self.own_bridge = False
        self.before: set[str] = set()
        self.ignore = _shell_packages()
        if cli.wants_export(ns.otel) or _env_on("FLOWTRACE_OTEL"):
            self._start_export(options)
        try:
            self.session.start_for_tool()
        except (ToolIdTaken, TracingConflict) as error:
            self._stop_export()
            raise UsageError(f"%flowtrace: cannot trace: {error}") from None
        monitor = self.session._monitor
        self.filter = monitor.filter if monitor is not None else None
        self.since = counts_of(self.filter) if self.filter is not None else None

    def _start_export(self, options: dict[str, Any]) -> None:
        """Spans too: borrow the bridge already exporting (FLOWTRACE_OTEL=1), or start one."""
        from flowtrace_otel import otel  # noqa: PLC0415 - only when exporting

        self.exporting = True
        active = otel.active_bridge()
        if active is not None or otel.exporting():
            self.bridge = active
            self.before = set(active.trace_ids()) if active is not None else set()
            return
        try:
            self.bridge = otel.instrument_for_tool(**options)
        except (ToolIdTaken, TracingConflict) as error:
            raise UsageError(f"%flowtrace: cannot export: {error}") from None
        self.own_bridge = True

    def _stop_export(self) -> list[str]:
        """Flush the spans; the lines the CLI prints about the traces (ids and links)."""
        from flowtrace_otel import otel  # noqa: PLC0415 - only when exporting

        if self.own_bridge:
            trace_ids = self.bridge.trace_ids()
            otel.uninstrument_for_tool()  # flushes; says what was not delivered, if anything
            lost = self.bridge.lost_trace_ids()
            trace_ids = [t for t in trace_ids if t not in lost]
        else:
            bridge = self.bridge or otel.active_bridge()  # a deferred one is built by now
            if bridge is None:
                return []
            trace_ids = [t for t in bridge.trace_ids() if t not in self.before]
            from flowtrace_otel.otel import pipeline  # noqa: PLC0415

            bridge.force_flush(pipeline.exit_timeout_ms())
        lines = io.StringIO()
        cli._report_trace_ids(trace_ids, lines)  # type: ignore[arg-type]
        return lines.getvalue().splitlines()

    def finish(self, show: bool = True) -> list[CallEvent]:
        """Stop tracing, export and write files; display the tree unless ``show`` is False."""
        until = counts_of(self.filter) if self.filter is not None else None
        events = self.session.stop()
        notes: list[str] = []
        if self.exporting:
            try:
                notes.extend(self._stop_export())
            except Exception as error:  # the tree is still worth showing
                notes.append(f"flowtrace-otel: exporting the cell's spans failed: {error!r}")
        err = io.StringIO()
        self.ns.err = err
        cli._write_files(self.ns, events)
        notes.extend(err.getvalue().splitlines())
        if not show:
            return events
        if not events and self.filter is not None:
            notes.insert(0, self._why_empty(until))
        view = TreeView(events, notes=notes, show_result=self.ns.show_result,
                        show_timing=not self.ns.no_timing, max_lines=self.ns.max_lines,
                        show_imports=self.ns.show_imports,
                        fold_after=self.session.options.fold_after)
        display(view)  # type: ignore[no-untyped-call]
        return events


    def _why_empty(self, until: Counts | None) -> str:
        """Why nothing was recorded, leaving out what the shell itself ran around the cell."""
        assert self.filter is not None
        since = dict(self.since or {})
        generated = (GENERATED, "")  # the shell's own (traitlets, IPython) is always some
        since[generated] = (until or {}).get(generated, 0)
        return why_nothing_recorded(self.filter, since, until, cli=True, ignore=self.ignore
                                    ).replace("flowtrace-otel: ", "%%flowtrace: ", 1)


def _show_magic_line(cell_file: str, options: str) -> None:
    """Tracebacks quote line 1 of the cell as typed (``%%flowtrace ...``), not as run."""
    entry: Any = linecache.cache.get(cell_file)
    if entry is None or not entry[2] or "_flowtrace_magics.begin_cell(" not in entry[2][0]:
        return
    typed = f"%%flowtrace {options}".rstrip() + "\n"
    linecache.cache[cell_file] = (entry[0], entry[1], [typed, *entry[2][1:]], entry[3])


def _env_on(name: str) -> bool:
    """True when the variable is set to something other than off."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


@magics_class
class FlowtraceMagics(Magics):
    """``%%flowtrace`` and ``%flowtrace``."""

    def __init__(self, shell: Any) -> None:
        """Register the transformer and the cell events on ``shell``."""
        super().__init__(shell)
        self.parser = build_parser()
        self.valued = valued_options(self.parser)
        self.transformer: MagicLine | None = None
        self.depth = 0  # cells running (pre_execute to post_execute), relative to the load
        self.running: tuple[int, CellTrace] | None = None  # (depth of the traced cell, trace)

    # --- %%flowtrace cells: the cell runs as any cell, traced from its line 1 -----------------
    def begin_cell(self, options: str) -> None:
        """Line 1 of a ``%%flowtrace`` cell, as :class:`MagicLine` wrote it: start tracing."""
        __tracebackhide__ = True  # IPython leaves this frame out of tracebacks
        if self.running is not None:
            return  # a cell run by the traced cell: part of its trace
        ns = self.parser.parse_args(shlex.split(options))
        _show_magic_line(sys._getframe(1).f_code.co_filename, options)
        self.running = (self.depth, CellTrace(ns, f"%%flowtrace: In [{self._count()}]"))

    def pre_execute(self) -> None:
        """A cell starts (maybe one run by the traced cell)."""
        self.depth += 1

    def post_execute(self) -> None:
        """A cell ended: the traced one? Stop and show its tree."""
        self.depth -= 1
        running = self.running
        if running is not None and self.depth < running[0]:
            self.running = None
            running[1].finish()

    # --- the magic itself: %flowtrace lines, and cells run by run_cell_magic -----------------
    @needs_local_scope
    @line_cell_magic
    def flowtrace(self, line: str, cell: str | None = None,
                  local_ns: dict[str, Any] | None = None) -> Any:
        """Trace a statement (``%flowtrace [options] f(3)``) or a cell; show the call tree.

        Options are those of ``flowtrace-otel run`` (``%flowtrace --help`` lists them):
        ``--show-result``, ``--max-repr N``, ``--include PATTERN``, ``--exclude PATTERN``,
        ``--flamegraph FILE``, ``--perfetto FILE``, ``--html FILE``, ``--json FILE``,
        ``--otel``, ... The statement's value is returned; its exception propagates.
        """
        __tracebackhide__ = True  # IPython leaves this frame out of tracebacks
        if cell is None:
            argv, source = split_line(line, self.valued)
        else:
            argv, source = shlex.split(line), cell
        try:
            ns = self.parser.parse_args(argv)
        except _HelpShown:
            return None
        if not source.strip():
            raise UsageError("%flowtrace: nothing to trace: %flowtrace [options] statement")
        shell: Any = self.shell
        code, mode = self._compile(source if cell is None else shell.transform_cell(source))
        globals_ns = shell.user_ns
        locals_ns = local_ns if local_ns is not None else globals_ns
        trace = CellTrace(ns, f"%flowtrace: In [{self._count()}]")
        try:  # no context manager: its frames would show in the statement's traceback
            if mode == "eval":
                return eval(code, globals_ns, locals_ns)
            exec(code, globals_ns, locals_ns)
            return None
        finally:
            trace.finish()

    def _count(self) -> int:
        """The number of the cell that runs (the shell counted it already)."""
        return max(int(getattr(self.shell, "execution_count", 1)) - 1, 0)

    def _compile(self, source: str) -> tuple[Any, str]:
        """The code of a statement (an expression is evaluated, for its value) or a cell."""
        shell: Any = self.shell
        name = shell.compile.cache(source, self._count())
        try:
            return shell.compile(source, name, "eval"), "eval"
        except SyntaxError:
            return shell.compile(source, name, "exec"), "exec"


class MagicLine:
    """Input transformer: line 1 of a valid ``%%flowtrace`` cell becomes the call that traces it.

    ``%%flowtrace OPTIONS`` is replaced by ``get_ipython()._flowtrace_magics.begin_cell(
    'OPTIONS')``, on the same line: the cell's own lines keep their numbers, and IPython runs
    the cell as any other (its value, output, exception, traceback). The stop is IPython's
    ``post_execute`` event, which follows every run, silent ones too (``.ipy`` scripts).
    A cell whose options are wrong, or that has no body, is left to the magic, which says why.
    """

    #: IPython's check for a complete input skips it, so the ``%%`` rule (a blank line ends
    #: the cell) still holds at a terminal prompt
    has_side_effects = True

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        """Options are checked with ``parser``."""
        self.parser = parser

    def __call__(self, lines: list[str]) -> list[str]:
        """``lines`` with a ``%%flowtrace`` line turned into the call that starts tracing."""
        if not lines or _magic_options("".join(lines), self.parser) is None:
            return lines
        match = _MAGIC_LINE.match(lines[0].lstrip("\r\n"))
        assert match is not None
        options = match.group("options") or ""
        return [f"get_ipython()._flowtrace_magics.begin_cell({options.strip()!r})\n", *lines[1:]]


def load(shell: Any) -> None:
    """Register the magics, the input transformer and the cell events on ``shell``."""
    if getattr(shell, "_flowtrace_magics", None) is not None:
        return
    magics = FlowtraceMagics(shell)
    shell.register_magics(magics)
    magics.transformer = MagicLine(magics.parser)
    shell.input_transformers_cleanup.append(magics.transformer)
    shell.events.register("pre_execute", magics.pre_execute)
    shell.events.register("post_execute", magics.post_execute)
    shell._flowtrace_magics = magics


def unload(shell: Any) -> None:
    """Take off what :func:`load` registered (the magic names stay until a new one)."""
    magics = getattr(shell, "_flowtrace_magics", None)
    if magics is None:
        return
    if magics.transformer in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(magics.transformer)
    for event, callback in (("pre_execute", magics.pre_execute),
                            ("post_execute", magics.post_execute)):
        with contextlib.suppress(ValueError):
            shell.events.unregister(event, callback)
    if magics.running is not None:
        magics.running[1].finish(show=False)
        magics.running = None
    shell._flowtrace_magics = None
