"""pytest plugin: ``pytest --flowtrace`` adds the call tree of each failing test to its report.

PYTEST_DONT_REWRITE (pytest would otherwise rewrite this module's asserts as a plugin's)

pytest loads it through the ``pytest11`` entry point ``flowtrace``; it is off unless asked.
Without ``--flowtrace`` (and without ``FLOWTRACE_OTEL=1``) it only adds its options: it traces
nothing and imports nothing of OpenTelemetry. ``-p no:flowtrace`` leaves it out entirely.

With ``--flowtrace`` each test runs in a :class:`~flowtrace_otel.session.TraceSession` of its
own, from the start of its setup to the end of its teardown, started as an outer tool (a test
that uses flowtrace_otel itself sees nothing of it). When a phase fails, its report gets a
section ``call tree (call)`` (``(setup)``, ``(teardown)``) holding the tree of the calls the test
made so far, folded and cut as ``flowtrace-otel run`` prints it. Passing tests add nothing.
With ``FLOWTRACE_OTEL=1`` each test is also a span with the test's calls under it
(:mod:`flowtrace_otel.otel.pytest_spans`). See ``docs/pytest.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from flowtrace_otel.option_types import count

if TYPE_CHECKING:
    from flowtrace_otel.events import CallEvent
    from flowtrace_otel.session import TraceSession

#: the report section's title, followed by the phase: ``call tree (call)``
SECTION = "call tree"
_PLUGIN_NAME = "flowtrace-tracer"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--flowtrace`` options (they mirror ``flowtrace-otel run``'s)."""
    group = parser.getgroup("flowtrace", "flowtrace_otel: call trees of failing tests")
    group.addoption("--flowtrace", action="store_true", default=False,
                    help="trace each test and add the call tree of a failing one to its report")
    group.addoption("--flowtrace-include", action="append", default=[], metavar="PATTERN",
                    help="trace only code matching this module glob or path glob (repeatable; "
                         "default: your code, not the standard library or site-packages)")
    group.addoption("--flowtrace-exclude", action="append", default=[], metavar="PATTERN",
                    help="never trace code matching this pattern (repeatable)")
    group.addoption("--flowtrace-no-result", action="store_true", default=False,
                    help="do not capture or show return values")
    group.addoption("--flowtrace-max-repr", type=count, default=None, metavar="N",
                    help="cut captured values to N characters (default 80)")
    group.addoption("--flowtrace-no-timing", action="store_true", default=False,
                    help="hide durations in the tree")
    group.addoption("--flowtrace-links", action="store_true", default=False,
                    help="end each call's line with its path:line (plain text, for terminals "
                         "and editors that open it)")
    group.addoption("--flowtrace-max-lines", type=count, default=2000, metavar="N",
                    help="print at most N lines of a tree, each cut marked (default 2000; 0 = all)")
    group.addoption("--flowtrace-flamegraph", metavar="DIR", default=None,
                    help="write each test's calls as folded stacks to DIR/<test>.folded "
                         "(traces the tests, with or without --flowtrace)")
    group.addoption("--flowtrace-perfetto", metavar="DIR", default=None,
                    help="write each test's calls as a Chrome trace-event timeline to "
                         "DIR/<test>.json (traces the tests, with or without --flowtrace)")


def pytest_configure(config: pytest.Config) -> None:
    """Register the tracer when ``--flowtrace``, an export folder or ``FLOWTRACE_OTEL=1`` asks."""
    asked = bool(config.getoption("flowtrace") or config.getoption("flowtrace_flamegraph")
                 or config.getoption("flowtrace_perfetto"))
    if not asked and not _bridge_running():
        return
    config.pluginmanager.register(_Tracer(config, asked), _PLUGIN_NAME)


def _bridge_running() -> bool:
    """True while the OpenTelemetry bridge traces (``FLOWTRACE_OTEL=1``, or ``instrument()``).

    Read without importing anything: if ``flowtrace_otel.otel`` was never imported, no bridge runs.
    """
    otel = sys.modules.get("flowtrace_otel.otel")
    return otel is not None and getattr(otel, "_active", None) is not None


@dataclasses.dataclass(frozen=True)
class TreeOptions:
    """How the section's tree is printed."""

    show_result: bool = True
    show_timing: bool = True
    max_lines: int = 2000
    links: bool = False


class _Tracer:
    """The registered plugin object: a session per test, sections for failures, test spans."""

    def __init__(self, config: pytest.Config, record: bool) -> None:
        """Read the options; make the export folders (a usage error if one cannot be made).

        ``record``: run a session per test (for the sections, the export files or both).
        """
        self.record = record
        self.sections = bool(config.getoption("flowtrace"))
        no_result = bool(config.getoption("flowtrace_no_result"))
        self.session_options: dict[str, Any] = {}
        include = config.getoption("flowtrace_include")
        exclude = config.getoption("flowtrace_exclude")
        if include:
            self.session_options["include"] = tuple(include)
        if exclude:
            self.session_options["exclude"] = tuple(exclude)
        if no_result:
            self.session_options["capture_result"] = False
        max_repr = config.getoption("flowtrace_max_repr")
        if max_repr is not None:
            self.session_options["max_repr"] = max_repr
        self.tree = TreeOptions(show_result=not no_result,
                                show_timing=not config.getoption("flowtrace_no_timing"),
                                max_lines=config.getoption("flowtrace_max_lines"),
                                links=bool(config.getoption("flowtrace_links")))
        self.flamegraph_dir = _export_dir(config.getoption("flowtrace_flamegraph"))
        self.perfetto_dir = _export_dir(config.getoption("flowtrace_perfetto"))
        self.session: TraceSession | None = None
        self.keeper: _Keeper | None = None
        self.cannot_trace = ""
        self.test_span: Any = None
        self.spans_made = False

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> Generator[None, Any, None]:
        """Trace the test from its setup to its teardown; export its calls if asked."""
        self.test_span = self._start_span(item)
        self.session = self._start_session(item) if self.record else None
        try:
            yield
        finally:
            session, self.session = self.session, None
            span, self.test_span = self.test_span, None
            try:
                if session is not None:
                    self._export(item, session.stop())
            finally:
                if span is not None:
                    span.end()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        """A failing phase's report gets the call tree; every report tells the test's span."""
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if self.test_span is not None:
            self.test_span.add_report(report)
        if report.failed and self.sections and self.session is not None:
            report.sections.append((f"{SECTION} ({report.when})", self._tree(self.session)))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Stop the tests' monitor; send the test spans still queued.

        (An xdist worker may end without running ``atexit``.)
        """
        keeper, self.keeper = self.keeper, None
        if keeper is not None:
            from flowtrace_otel.session import registry  # noqa: PLC0415

            registry.detach(keeper)
        if self.spans_made:
            from flowtrace_otel.otel import pytest_spans  # noqa: PLC0415 - OpenTelemetry

            pytest_spans.flush()

    def _start_session(self, item: pytest.Item) -> TraceSession | None:
        """A started session for one test, invisible to the test's own use of flowtrace_otel.

        None when tracing cannot start (another tool holds the ``sys.monitoring`` ids): the
        tests then run untraced, after one warning.
        """
        from flowtrace_otel.monitoring import ToolIdTaken  # noqa: PLC0415 - only when asked
        from flowtrace_otel.session import TraceSession, TracingConflict, registry  # noqa: PLC0415

        if self.cannot_trace:
            return None
        session = TraceSession(**self.session_options)
        session.explain_empty = False  # said in the section, with this plugin's option names
        try:
            if self.keeper is None:  # the monitor then runs from test to test: see _Keeper
                keeper = _Keeper()
                registry.attach(keeper, session.options, tool=True)
                self.keeper = keeper
            return session.start_for_tool()
        except (ToolIdTaken, TracingConflict) as error:
            self.cannot_trace = str(error)
            _warn(item, f"flowtrace: the tests run untraced: {error}")
            return None

    def _start_span(self, item: pytest.Item) -> Any:
        """The test's span when the OpenTelemetry bridge runs, else None."""
        if not _bridge_running():
            return None
        from flowtrace_otel.otel import pytest_spans  # noqa: PLC0415 - OpenTelemetry

        span = pytest_spans.start(item.nodeid, span_attributes(item))
        self.spans_made = self.spans_made or span is not None
        return span

    def _tree(self, session: TraceSession) -> str:
        """The section's text: the tree of the calls finished so far, or why there are none."""
        events = session.finished()
        if not events:
            return _why_empty(session)
        return format_section(events, self.tree, session.options.fold_after)

    def _export(self, item: pytest.Item, events: list[CallEvent]) -> None:
        """Write the test's flame graph and timeline files, if asked for and it made calls."""
        if not events:
            return  # a skipped test: no empty files
        from flowtrace_otel.exports import to_folded, to_perfetto  # noqa: PLC0415

        for folder, suffix, write in ((self.flamegraph_dir, ".folded", to_folded),
                                      (self.perfetto_dir, ".json", to_perfetto)):
            if folder is None:
                continue
            path = os.path.join(folder, file_name(item.nodeid) + suffix)
            try:
                write(events, path)
            except OSError as error:
                _warn(item, f"flowtrace: cannot write {path}: {error}")


class _Keeper:
    """A consumer that records nothing, attached from the first test to the end of the run.

    It keeps the tests' monitor (its ``sys.monitoring`` tool id and events) running between
    tests, so each test's session only joins it: switching events off and on again would make
    CPython instrument again every function that runs next, pytest's included (~5 ms a test).
    """

    def on_root(self, record: Any) -> bool:
        """Nothing is recorded for it."""
        return False

    def on_end(self, record: Any) -> None:
        """Never called with a record of its own."""


def format_section(events: list[CallEvent], tree: TreeOptions, fold_after: int) -> str:
    """The call tree as the section shows it (the tree ``flowtrace-otel run`` prints)."""
    from flowtrace_otel.formatters import format_tree  # noqa: PLC0415

    return format_tree(events, show_result=tree.show_result, show_timing=tree.show_timing,
                       fold_after=fold_after, max_lines=tree.max_lines, links=tree.links)


def _why_empty(session: TraceSession) -> str:
    """One line: why the session recorded nothing, with this plugin's option names."""
    from flowtrace_otel.filters import why_nothing_recorded  # noqa: PLC0415

    monitor = session._monitor
    if monitor is None:
        return "flowtrace: no calls recorded\n"
    line = why_nothing_recorded(monitor.filter, session._left_out_at_start, cli=True)
    return line.replace("flowtrace-otel:", "flowtrace:").replace(
        "--include", "--flowtrace-include") + "\n"


def span_attributes(item: pytest.Item) -> dict[str, Any]:
    """The test span's attributes: the test's id, file, line and function."""
    _, line, domain = item.location
    module = getattr(getattr(item, "module", None), "__name__", None)  # a Python test's module
    function = domain.partition("[")[0]  # without the parameter ids
    attributes: dict[str, Any] = {
        "test.name": item.nodeid,
        "test.case.name": item.nodeid,
        "code.file.path": os.fspath(item.path),
        "code.function.name": f"{module}.{function}" if isinstance(module, str) else function,
    }
    if line is not None:
        attributes["code.line.number"] = line + 1
    return attributes


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=\[\]-]+")
_MAX_NAME = 150


def file_name(nodeid: str) -> str:
    """A file name for a test's exports: its node id with ``/`` and ``::`` as ``.``.

    Other characters a file name should not hold become ``_``; then, and when the name is cut
    to a length every file system takes, a short hash of the node id keeps names apart.
    """
    readable = nodeid.replace("::", ".").replace("/", ".").replace("\\", ".")
    safe = _UNSAFE.sub("_", readable).lstrip(".")
    if safe == readable and len(safe) <= _MAX_NAME:
        return safe
    digest = hashlib.sha1(nodeid.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[:_MAX_NAME]}-{digest}"


def _export_dir(path: str | None) -> str | None:
    """The absolute folder for per-test files, made now; None when not asked for."""
    if not path:
        return None
    folder = os.path.abspath(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise pytest.UsageError(f"flowtrace: cannot make folder {folder}: {error}") from error
    return folder


def _warn(item: pytest.Item, message: str) -> None:
    """Tell the user through pytest's warnings summary (stderr if warnings are errors)."""
    try:
        item.warn(pytest.PytestWarning(message))
    except Exception:
        print(message, file=sys.stderr)
