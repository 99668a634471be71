"""``flowtrace-otel run``: run a program exactly as ``python`` would, traced.

With no OTLP endpoint configured, the tree is printed to stderr when the program ends (the
embedded default); ``--json FILE`` also writes the events as JSON. With an endpoint configured
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or ``--otel``, calls
are exported as OpenTelemetry spans instead and the trace ids are printed at exit.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import importlib.machinery
import importlib.util
import io
import os
import runpy
import signal
import sys
import threading
import traceback
import types
import zipfile
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, TextIO

from flowtrace_otel import doctor, sigterm
from flowtrace_otel.events import CallEvent
from flowtrace_otel.exports import to_folded, to_perfetto
from flowtrace_otel.filters import Counts, counts_of, program_code, why_nothing_recorded
from flowtrace_otel.formatters import print_tree, to_json
from flowtrace_otel.monitoring import ToolIdTaken
from flowtrace_otel.option_types import count
from flowtrace_otel.session import TraceSession, TracingConflict, get_config, registry

_OUR_DIR = os.path.dirname(os.path.abspath(__file__))

_RUN_EPILOG = """\
output:
  With no OTLP endpoint configured, the call tree of your code is printed to stderr when the
  program ends (stdout stays the program's). The exit code is the program's: 0, its
  sys.exit() code, or 1 after an uncaught exception (printed as python prints it).
  With OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set, or --otel,
  calls are exported as OpenTelemetry spans instead and the trace ids are printed.

what is traced:
  Your code, and the program you named with its package (a script, -m pkg, or a console
  script's entry point, even if installed): the standard library, site-packages,
  flowtrace_otel itself and module-level code are left out. --include replaces this choice.
  Patterns: a module glob (myapp, myapp.*) or a path glob (src/*.py). A run that recorded
  nothing ends with one line saying why.

environment (command-line options win):
  FLOWTRACE_OTEL_INCLUDE, FLOWTRACE_OTEL_EXCLUDE   comma-separated patterns
  FLOWTRACE_OTEL_CAPTURE_ARGS, _CAPTURE_RESULT     1/0 (default 1)
  FLOWTRACE_OTEL_MAX_REPR, _MAX_ITEMS              value limits (default 80, 8)
  FLOWTRACE_OTEL_FULL_REPR                         1 runs your __repr__ (default 0)
  FLOWTRACE_OTEL_REDACT                            secret-like parameter names to hide
  NO_COLOR                                         no colour (and plain links) in the tree
  FORCE_HYPERLINK                                  1/0: the terminal shows OSC 8 links or not

examples:
  flowtrace-otel run app.py --port 8000
  flowtrace-otel run --include myapp --json calls.json -m myapp.cli serve
"""


def _version() -> str:
    """The package version and the core that records calls."""
    from flowtrace_otel import __version__  # noqa: PLC0415 - the package imports this module
    from flowtrace_otel.core import CoreUnavailable, current_core  # noqa: PLC0415

    try:
        core = current_core().describe()
    except CoreUnavailable as exc:
        core = f"unavailable: {exc}"
    return f"{__version__}, core: {core}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``flowtrace-otel``."""
    parser = argparse.ArgumentParser(
        prog="flowtrace-otel",
        description="Trace every call of your own code in a Python program, with no code change.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run a script or module traced (like `python script.py` / `python -m mod`)",
        usage="flowtrace-otel run [options] (script.py | -m module) [args ...]",
        description="Run a program traced, exactly as `python script.py args` or `python -m "
                    "module args` would (same sys.argv, __main__, stdout and exit code). "
                    "Everything after the script or -m module is passed to the program untouched.",
        epilog=_RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # an abbreviated option would take the program's name as its value
    )
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
    run.add_argument("--include", action="append", default=[], metavar="PATTERN",
                     help="trace only code matching this module glob or path glob (repeatable)")
    run.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                     help="never trace code matching this pattern (repeatable)")
    run.add_argument("--no-args", action="store_true", help="do not capture argument values")
    run.add_argument("--no-result", action="store_true", help="do not capture return values")
    run.add_argument("--max-repr", type=count, default=None, metavar="N",
                     help="cut captured values to N characters (default 80)")
    run.add_argument("--max-items", type=count, default=None, metavar="N",
                     help="show at most N items of a list, tuple, set or dict (default 8)")
    run.add_argument("--full-repr", action="store_true",
                     help="call repr() on objects of your classes (off by default: "
                          "that runs your code)")
    run.add_argument("--show-result", action="store_true", help="show return values in the tree")
    run.add_argument("--no-timing", action="store_true", help="hide durations in the tree")
    run.add_argument("--max-lines", type=count, default=2000, metavar="N",
                     help="print at most N lines of the tree, each cut marked (default 2000; "
                          "0 = all)")
    run.add_argument("--json", metavar="FILE", help="also write the events to FILE as JSON")
    run.add_argument("--flamegraph", metavar="FILE",
                     help="also write folded stacks to FILE (flamegraph.pl, inferno, speedscope)")
    run.add_argument("--perfetto", metavar="FILE",
                     help="also write a Chrome trace-event JSON timeline to FILE "
                          "(ui.perfetto.dev, chrome://tracing)")
    run.add_argument("--html", metavar="FILE",
                     help="also write a self-contained HTML page to FILE: the collapsible call "
                          "tree and a flame view")
    run.add_argument("--links", action=argparse.BooleanOptionalAction, default=None,
                     help="end each call's line with its file:line (default: on when stderr is "
                          "a terminal, as OSC 8 hyperlinks where the terminal shows them)")
    run.add_argument("--show-imports", action="store_true",
                     help="expand the calls made while importing modules (folded by default)")
    run.add_argument("--otel", action="store_true",
                     help="export spans over OTLP even if no endpoint variable is set")
    run.add_argument("target", nargs="?", metavar="script.py", help="the script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    doctor.register(sub)
    return parser


def _options(ns: argparse.Namespace) -> dict[str, Any]:
    """Tracer options from the command line (only those given)."""
    options: dict[str, Any] = {}
    if ns.include:
        options["include"] = tuple(ns.include)
    if ns.exclude:
        options["exclude"] = tuple(ns.exclude)
    if ns.no_args:
        options["capture_args"] = False
    if ns.no_result:
        options["capture_result"] = False
    if ns.max_repr is not None:
        options["max_repr"] = ns.max_repr
    if ns.max_items is not None:
        options["max_items"] = ns.max_items
    if ns.full_repr:
        options["full_repr"] = True
    return options


def wants_export(force: bool) -> bool:
    """True when spans should go to an OTLP endpoint rather than the printed tree."""
    return force or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                         or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def valued_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The option strings of ``run`` that take a value, read off the parser itself."""
    run = _subparser(parser, "run")
    return frozenset(option for action in run._actions if action.nargs != 0
                     for option in action.option_strings)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)


def split_program(argv: list[str], valued: frozenset[str] | None = None,
                  ) -> tuple[list[str], str | None, str | None, list[str]]:
    """Split ``run``'s arguments into (our options, module, script, program arguments).

    Everything after the script or ``-m MODULE`` belongs to the program, even ``--help``,
    as with ``python script.py --help``. ``valued`` are the options that take a value (the
    value may also follow ``=``); by default, those of :func:`build_parser`'s ``run``.
    """
    if valued is None:
        valued = valued_options(build_parser())
    ours: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            index += 1
            break
        if token == "-m" or (token.startswith("-m") and not token.startswith("--")):
            module = token[2:] or (argv[index + 1] if index + 1 < len(argv) else None)
            rest = argv[index + (1 if token[2:] else 2):]
            return ours, module, None, rest
        if not token.startswith("-") or token == "-":
            break
        ours.append(token)
        if token in valued and index + 1 < len(argv):
            ours.append(argv[index + 1])
            index += 1
        index += 1
    if index < len(argv):
        return ours, None, argv[index], argv[index + 1:]
    return ours, None, None, []


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``flowtrace-otel``; returns the program's exit code."""
    parser = build_parser()
    as_process = argv is None  # only then may a Ctrl-C end the process as python would
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "doctor":
        return doctor.run(parser.parse_args(argv))
    if not argv or argv[0] != "run":
        parser.parse_args(argv)  # --help, or an error naming the missing/unknown command
        return 2
    ours, module, target, program_args = split_program(argv[1:], valued_options(parser))
    ns = parser.parse_args(["run", *ours])
    ns.module, ns.target, ns.args = module, target, program_args
    ns.as_process = as_process
    ns.err = sys.stderr  # the tree goes here even if the program replaces sys.stderr
    if ns.module is None and ns.target is None:
        parser.error("run needs a script or -m MODULE")
    problem = _cannot_run(ns.module, ns.target)
    if problem:
        print(f"flowtrace-otel: {problem}", file=sys.stderr)
        return 2 if ns.target is not None else 1
    options = _options(ns)
    try:
        with program_code(() if ns.include else program_paths(ns.module, ns.target)):
            if wants_export(ns.otel):
                code = _run_exported(ns, options)
            else:
                code = _run_printed(ns, options)
    except CannotTrace as error:
        print(f"flowtrace-otel: cannot trace: {error.__cause__}", file=sys.stderr)
        return 2
    if code < 0:  # the program died of an uncaught KeyboardInterrupt
        if as_process and os.name == "posix":
            _die_of_signal(-code)  # as python does: the parent sees "killed by SIGINT"
        return 128 - code
    return code


def _die_of_signal(signum: int) -> None:
    """End this process by ``signum`` with its default action, as python does on Ctrl-C."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _cannot_run(module: str | None, script: str | None) -> str | None:
    """Why python itself would refuse to start this program, or None."""
    if script is not None and not os.path.exists(script):
        return f"can't open file {os.path.abspath(script)!r}: [Errno 2] No such file or directory"
    return None


def program_paths(module: str | None, script: str | None) -> tuple[str, ...]:
    """The files and package folders of the program named on the command line.

    They are user code even when installed (site-packages) or in the standard library: for
    ``-m pkg.mod`` the package ``pkg``; for a script, the script and the package folder it
    sits in; for a console script (``$(which pycodestyle)``), the package of its entry point.
    """
    paths: list[str] = []
    tops: list[str] = []
    if module is not None:
        tops.append(module.split(".")[0])
        path0 = os.getcwd()
    else:
        assert script is not None
        real = os.path.realpath(script)
        path0 = os.path.dirname(real)
        paths.append(_package_root(real) if os.path.isfile(real) else real)
        tops.extend(_launched_modules(real))
    saved = list(sys.path)
    sys.path[:1] = [path0]  # found as the program will find it
    try:
        paths.extend(path for top in tops if (path := _module_location(top)))
    finally:
        sys.path[:] = saved
    return tuple(paths)


def _package_root(script: str) -> str:
    """The outermost package folder holding ``script``, or ``script`` itself."""
    folder, found = os.path.dirname(script), script
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        found, folder = folder, os.path.dirname(folder)
    return found


def _launched_modules(script: str) -> list[str]:
    """The top-level packages a console-script launcher imports its entry point from.

    A launcher (what pip and uv write into ``bin/``) only imports its entry point and calls
    it: ``from pycodestyle import _main`` ... ``sys.exit(_main())``. A script that defines
    anything is a program of its own, not a launcher: nothing is returned for it.
    """
    try:
        if os.path.getsize(script) > 16_384 or zipfile.is_zipfile(script):
            return []
        with io.open_code(script) as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return []
    if any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
           for node in ast.walk(tree)):
        return []
    tops = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in tops:
                tops.append(top)
    return tops


def _module_location(top: str) -> str | None:
    """The folder of package ``top``, or the file of module ``top``, without importing it."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return next(iter(spec.submodule_search_locations), None)
    return spec.origin if spec.origin and os.path.isfile(spec.origin) else None


def _find_module(module: str) -> str | None:
    """Why ``python -m module`` would fail to find ``module``, or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as error:
        return f"error while finding module specification for {module!r} ({error})"
    return f"No module named {module}" if spec is None else None


class CannotTrace(Exception):
    """Tracing could not start (tool ids taken, or already tracing with other options)."""


def _run_printed(ns: argparse.Namespace, options: dict[str, Any]) -> int:
    """Run with an in-memory session and print the tree to stderr at the end."""
    session = TraceSession(**options)
    session.explain_empty = False  # said below, with the command line's option names
    try:
        session.start_for_tool()
    except (ToolIdTaken, TracingConflict) as error:
        raise CannotTrace() from error
    code = 1
    on_sigterm = _OnSigterm(lambda: _report_events(ns, session.stop(), session.options.fold_after,
                                                   flush_stdout=False))
    on_sigterm.arm(ns.as_process)
    watch = _EmptyWatch()  # after arming: the tool's own calls are not the program's
    try:
        code = run_program(ns.module, ns.target, ns.args, ns.as_process, watch)
    finally:
        on_sigterm.disarm()
        events = session.stop()
        _report_events(ns, events, session.options.fold_after)
        if not events:
            watch.explain(ns.err)
    return code


#: standard-library packages the runner itself calls to start the program (not the program's)
_RUNNER_PACKAGES = frozenset({"runpy", "importlib", "pkgutil", "zipfile", "zipimport",
                              "posixpath", "genericpath", "os", "threading"})


class ProgramWatch(Protocol):
    """What :func:`run_program` tells about the program's run."""

    def program_ended(self) -> None:
        """The program's own code is done (threads are joined after this)."""

    def could_not_start(self) -> None:
        """The program ended with a syntax error."""


class _EmptyWatch:
    """Snapshots of what the running filter left out, to explain a run that recorded nothing.

    Counted from the start to the end of the program's own run (:meth:`program_ended`), not
    the interpreter's shutdown after it (joining threads runs the standard library's code).
    """

    def __init__(self) -> None:
        """Snapshot the running monitor's filter counts."""
        monitor = registry.monitor
        self.filter = monitor.filter if monitor is not None else None
        self.since = counts_of(self.filter) if self.filter is not None else None
        self.until: Counts | None = None

    def program_ended(self) -> None:
        """Take the closing snapshot (the first call only)."""
        if self.filter is not None and self.until is None:
            self.until = counts_of(self.filter)

    def could_not_start(self) -> None:
        """The program did not compile: python's own message says it all."""
        self.filter = None

    def chose_nothing(self) -> bool:
        """True when no code was found to be user code since the start."""
        return self.filter is None or self.filter.chosen == 0

    def explain(self, err: TextIO) -> None:
        """Print the one line saying why nothing was recorded and which option would help."""
        if self.filter is None:
            return
        try:
            print(why_nothing_recorded(self.filter, self.since, self.until, cli=True,
                                       ignore=_RUNNER_PACKAGES), file=err)
        except (OSError, ValueError):
            pass  # stderr closed by the program


class _OnSigterm:
    """What ``run`` keeps if the program is killed by SIGTERM (see :mod:`flowtrace_otel.sigterm`).

    Armed only when running as the command line, while the program runs; never twice.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        self.flush = flush
        self.armed = False

    def arm(self, as_process: bool) -> None:
        """Run the flush if SIGTERM (with its default action) kills the program."""
        if as_process:
            self.armed = sigterm.flush_on_sigterm(self.run)

    def run(self) -> None:
        """The flush, at most once."""
        if self.armed:
            self.armed = False
            self.flush()

    def disarm(self) -> None:
        """The program ended by itself: no flush on SIGTERM any more."""
        if self.armed:
            self.armed = False
            sigterm.forget(self.run)


def _report_events(ns: argparse.Namespace, events: list[CallEvent], fold_after: int,
                   flush_stdout: bool = True) -> None:
    """Print the tree to stderr and write the JSON file; a closed stream is not an error.

    Without ``flush_stdout`` (killed by SIGTERM) the program's unflushed output stays
    unwritten, as it would untraced.
    """
    err = ns.err
    streams = (sys.stdout, sys.__stdout__) if flush_stdout else ()
    for stream in {id(s): s for s in streams if s is not None}.values():
        try:
            stream.flush()  # the program's output comes first
        except (OSError, ValueError):
            pass  # the program closed stdout or its reader went away: not ours to report
    try:
        print_tree(events, file=err, show_result=ns.show_result, show_timing=not ns.no_timing,
                   max_lines=ns.max_lines, fold_after=fold_after, show_imports=ns.show_imports,
                   links=ns.links)
    except (OSError, ValueError):
        pass
    _write_files(ns, events)


def _write_files(ns: argparse.Namespace, events: list[CallEvent]) -> None:
    """Write the files asked for (--json, --flamegraph, --perfetto); say so if one cannot be."""
    for path, write in ((ns.json, to_json), (ns.flamegraph, to_folded),
                        (ns.perfetto, to_perfetto), (ns.html, _html_writer(ns))):
        if not path:
            continue
        try:
            write(events, path)
        except OSError as error:
            print(f"flowtrace-otel: cannot write {path}: {error}", file=ns.err)


def _html_writer(ns: argparse.Namespace) -> Callable[[list[CallEvent], str], object]:
    """``--html``: the page with the tree as printed (same limits) and the flame view."""
    title = getattr(ns, "html_title", None)  # the notebook magic names its cell
    if title is None:
        program = ["-m", ns.module] if ns.module is not None else [ns.target]
        title = " ".join(["flowtrace-otel run", *program, *ns.args])

    def write(events: list[CallEvent], path: str) -> str:
        from flowtrace_otel.html import to_html  # noqa: PLC0415 - only when asked for

        return to_html(events, path, title=title, show_timing=not ns.no_timing,
                       max_lines=ns.max_lines, show_imports=ns.show_imports,
                       fold_after=get_config()["fold_after"])
    return write


def _run_exported(ns: argparse.Namespace, options: dict[str, Any]) -> int:
    """Run with the OpenTelemetry bridge and report the trace ids at the end."""
    from flowtrace_otel.otel import (  # noqa: PLC0415 - optional part
        instrument_for_tool,
        uninstrument_for_tool,
    )

    try:
        bridge = instrument_for_tool(**options)
    except (ToolIdTaken, TracingConflict) as error:
        raise CannotTrace() from error
    # the files (--json, --flamegraph, --perfetto) come from a session beside the bridge
    files = (TraceSession(**options) if ns.json or ns.flamegraph or ns.perfetto or ns.html
             else None)
    if files is not None:
        files.explain_empty = False
        files.start_for_tool()

    def flush_and_report() -> None:
        if files is not None:
            _write_files(ns, files.stop())
        trace_ids = bridge.trace_ids()
        chose_nothing = watch.chose_nothing()
        uninstrument_for_tool()  # says in one line what was not delivered, if anything
        lost = bridge.lost_trace_ids()
        _report_trace_ids([t for t in trace_ids if t not in lost], ns.err, _not_sent(bridge))
        if not trace_ids and chose_nothing:
            watch.explain(ns.err)

    on_sigterm = _OnSigterm(flush_and_report)
    on_sigterm.arm(ns.as_process)
    watch = _EmptyWatch()  # after arming: the tool's own calls are not the program's
    try:
        code = run_program(ns.module, ns.target, ns.args, ns.as_process, watch)
    finally:
        on_sigterm.disarm()
        flush_and_report()
    return code


def _not_sent(bridge: Any) -> str:
    """Why the bridge's spans did not go to an OTLP endpoint ('' when they did)."""
    from flowtrace_otel.otel import pipeline  # noqa: PLC0415 - optional part

    others = [p for p in bridge.providers() if p is not bridge.private_provider]
    return pipeline.not_sent_reason(bridge.private_provider, others)


def _report_trace_ids(trace_ids: list[str], err: TextIO, not_sent: str = "") -> None:
    """Tell the user where to look: the trace ids, and a Jaeger link for a local endpoint.

    No link is promised for traces that were not sent to an OTLP endpoint: one line says
    what happened to them instead (``not_sent``).
    """
    if not trace_ids:
        return
    if not_sent:
        count = f"{len(trace_ids)} trace" + ("s" if len(trace_ids) > 1 else "")
        ids = ", ".join(trace_ids[:5]) + (", …" if len(trace_ids) > 5 else "")
        print(f"flowtrace-otel: {count} ({ids}) {not_sent}", file=err)
        return
    endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4317")
    local = any(host in endpoint for host in ("localhost", "127.0.0.1", "[::1]"))
    shown = trace_ids[:5]
    for trace_id in shown:
        link = f"  http://localhost:16686/trace/{trace_id}" if local else ""
        print(f"flowtrace-otel: trace {trace_id}{link}", file=err)
    if len(trace_ids) > len(shown):
        print(f"flowtrace-otel: … and {len(trace_ids) - len(shown)} more traces", file=err)


def run_program(module: str | None, script: str | None, args: list[str],
                as_process: bool = False, watch: ProgramWatch | None = None) -> int:
    """Run a script or module as ``__main__`` with ``sys.argv`` set; return its exit code.

    The code is negative (``-SIGINT``) when the program ended with an uncaught
    ``KeyboardInterrupt``, which python reports by dying of that signal.

    As ``python`` does: ``sys.path[0]`` is the script's folder (the current folder for ``-m``).
    With ``as_process`` (the command line, not a call from Python) the interpreter's own
    thread shutdown follows the program, as at exit: executors' workers are told to end and
    non-daemon threads are waited for, so their calls are part of the run.
    ``watch`` is told when the program's own code is done (before that shutdown) and
    whether it could not start (a syntax error).
    """
    saved_argv, saved_path = sys.argv, list(sys.path)
    if module is not None:
        sys.argv = [module, *args]
        path0 = os.getcwd()
    else:
        assert script is not None
        sys.argv = [script, *args]
        path0 = os.path.dirname(os.path.realpath(script))
    if sys.path:
        sys.path[0] = path0
    else:
        sys.path.append(path0)
    try:
        problem = _find_module(module) if module is not None else None
        if problem:
            print(f"flowtrace-otel: {problem}", file=sys.stderr)
            return 1
        try:
            if module is not None:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            elif os.path.isfile(script or "") and not zipfile.is_zipfile(script or ""):
                _run_source_file(script or "")
            else:  # a folder or zip file with a __main__.py
                runpy.run_path(script or "", run_name="__main__")
        finally:
            if watch is not None:
                watch.program_ended()
            if as_process:
                _shut_down_threads()
    except SystemExit as exit_:
        return _exit_code(exit_)
    except BaseException as error:  # report it as python would, without our frames
        if watch is not None and isinstance(error, SyntaxError):
            watch.could_not_start()
        _print_user_traceback(error)
        return -int(signal.SIGINT) if isinstance(error, KeyboardInterrupt) else 1
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
    return 0


def _run_source_file(script: str) -> None:
    """Run a ``.py`` file as ``__main__`` the way ``python script.py`` does.

    Unlike ``runpy.run_path``, ``__file__`` and the code's file name are absolute while
    ``sys.argv[0]`` stays as typed, and ``sys.modules["__main__"]`` is the program's module.
    """
    path = os.path.abspath(script)
    with io.open_code(path) as handle:
        source = handle.read()
    code = compile(source, path, "exec", dont_inherit=True)
    main_module = types.ModuleType("__main__")
    main_module.__dict__.update(
        __file__=path, __cached__=None, __spec__=None, __package__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", path),
        __builtins__=builtins,
    )
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main_module
    try:
        exec(code, main_module.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def _shut_down_threads() -> None:
    """What the interpreter does first at exit: run the threading atexit hooks, join threads."""
    shutdown = getattr(threading, "_shutdown", None)  # private, present in 3.12 and 3.13
    if shutdown is not None:
        shutdown()


def _exit_code(exit_: SystemExit) -> int:
    """The process exit code python derives from a ``SystemExit``."""
    code = exit_.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_user_traceback(error: BaseException) -> None:
    """Print ``error`` through ``sys.excepthook`` with the runner's frames removed."""
    tb: TracebackType | None = error.__traceback__
    while tb is not None and _is_runner_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    error.__traceback__ = tb  # the default hook prints the exception's own traceback
    sys.stdout.flush()
    try:
        sys.excepthook(type(error), error, tb)
    except Exception:
        traceback.print_exception(type(error), error, tb)


def _is_runner_frame(filename: str) -> bool:
    """True for frames of this package and of runpy."""
    return filename.startswith(_OUR_DIR) or os.path.basename(filename) == "runpy.py" or (
        filename.startswith("<frozen runpy"))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
