"""``flowtrace-otel run``: run a program exactly as ``python`` would, traced.

With no OTLP endpoint configured, the tree is printed to stderr when the program ends (the
embedded default); ``--json FILE`` also writes the events as JSON. With an endpoint configured
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or ``--otel``, calls
are exported as OpenTelemetry spans instead and the trace ids are printed at exit.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback
from types import TracebackType

from flowtrace_otel.formatters import print_tree, to_json
from flowtrace_otel.session import TraceSession

_OUR_DIR = os.path.dirname(os.path.abspath(__file__))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``flowtrace-otel``."""
    parser = argparse.ArgumentParser(
        prog="flowtrace-otel",
        description="Trace every call of your own code in a Python program, with no code change.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run a script or module traced (like `python script.py` / `python -m mod`)",
        description="Run a program traced. Everything after the script (or -m module) is "
                    "passed to the program untouched.",
    )
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
    run.add_argument("--include", action="append", default=[], metavar="PATTERN",
                     help="trace only code matching this module glob or path glob (repeatable)")
    run.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                     help="never trace code matching this pattern (repeatable)")
    run.add_argument("--no-args", action="store_true", help="do not capture argument values")
    run.add_argument("--no-result", action="store_true", help="do not capture return values")
    run.add_argument("--max-repr", type=int, default=None, metavar="N",
                     help="cut captured values to N characters (default 80)")
    run.add_argument("--show-result", action="store_true", help="show return values in the tree")
    run.add_argument("--no-timing", action="store_true", help="hide durations in the tree")
    run.add_argument("--max-lines", type=int, default=2000, metavar="N",
                     help="print at most N calls of the tree (default 2000; 0 = all)")
    run.add_argument("--json", metavar="FILE", help="also write the events to FILE as JSON")
    run.add_argument("--otel", action="store_true",
                     help="export spans over OTLP even if no endpoint variable is set")
    run.add_argument("target", nargs="?", help="the script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    return parser


def _options(ns: argparse.Namespace) -> dict[str, object]:
    """Tracer options from the command line (only those given)."""
    options: dict[str, object] = {}
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
    return options


def wants_export(force: bool) -> bool:
    """True when spans should go to an OTLP endpoint rather than the printed tree."""
    return force or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                         or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``flowtrace-otel``; returns the program's exit code."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.module is not None and ns.target is not None:
        ns.args = [ns.target, *ns.args]
        ns.target = None
    if ns.module is None and ns.target is None:
        parser.error("run needs a script or -m MODULE")
    try:
        options = _options(ns)
        if wants_export(ns.otel):
            return _run_exported(ns, options)
        return _run_printed(ns, options)
    except TypeError as error:
        parser.error(str(error))
    return 2


def _run_printed(ns: argparse.Namespace, options: dict[str, object]) -> int:
    """Run with an in-memory session and print the tree to stderr at the end."""
    session = TraceSession(**options)
    session.start()
    try:
        code = run_program(ns.module, ns.target, ns.args)
    finally:
        events = session.stop()
        limit = ns.max_lines or len(events)
        sys.stdout.flush()
        print_tree(events[:limit], file=sys.stderr, show_result=ns.show_result,
                   show_timing=not ns.no_timing)
        if len(events) > limit:
            print(f"… {len(events) - limit} more calls not printed (--max-lines)", file=sys.stderr)
        if ns.json:
            to_json(events, ns.json)
    return code


def _run_exported(ns: argparse.Namespace, options: dict[str, object]) -> int:
    """Run with the OpenTelemetry bridge and report the trace ids at the end."""
    from flowtrace_otel.otel import instrument, uninstrument  # noqa: PLC0415 - optional part

    bridge = instrument(**options)
    try:
        code = run_program(ns.module, ns.target, ns.args)
    finally:
        trace_ids = bridge.trace_ids()
        uninstrument()
        _report_trace_ids(trace_ids)
    return code


def _report_trace_ids(trace_ids: list[str]) -> None:
    """Tell the user where to look: the trace ids, and a Jaeger link for a local endpoint."""
    if not trace_ids:
        return
    endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4317")
    local = any(host in endpoint for host in ("localhost", "127.0.0.1", "[::1]"))
    shown = trace_ids[:5]
    for trace_id in shown:
        link = f"  http://localhost:16686/trace/{trace_id}" if local else ""
        print(f"flowtrace-otel: trace {trace_id}{link}", file=sys.stderr)
    if len(trace_ids) > len(shown):
        print(f"flowtrace-otel: … and {len(trace_ids) - len(shown)} more traces", file=sys.stderr)


def run_program(module: str | None, script: str | None, args: list[str]) -> int:
    """Run a script or module as ``__main__`` with ``sys.argv`` set; return its exit code."""
    saved_argv, saved_path0 = sys.argv, sys.path[0] if sys.path else None
    if module is not None:
        sys.argv = [module, *args]
        sys.path.insert(0, os.getcwd())
    else:
        assert script is not None
        sys.argv = [script, *args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        if module is not None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(script or "", run_name="__main__")
    except SystemExit as exit_:
        return _exit_code(exit_)
    except BaseException as error:  # report it as python would, without our frames
        _print_user_traceback(error)
        return 130 if isinstance(error, KeyboardInterrupt) else 1
    finally:
        sys.argv = saved_argv
        if saved_path0 is not None and sys.path:
            sys.path.pop(0)
    return 0


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
