"""The pytest plugin (issue 14, item 3): real pytest runs on a sample project in a folder.

Each run is a subprocess ``python -m pytest`` in a clean environment; the checks read what a
person sees in its output (the "call tree" sections of failing tests), the exit code, the files
written, and the spans a real OTLP receiver got.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowtrace_otel.pytest_plugin import file_name
from flowtrace_otel.testing import OtlpReceiver
from tests._programs import PY, Run, clean_env, run, write

SHOP = """
    PRICES = {"apple": 3, "pear": 4}


    def price(item):
        return PRICES[item]


    def total(items):
        return sum(price(i) for i in items)


    def checkout(items, paid):
        due = total(items)
        if paid < due:
            raise ValueError(f"paid {paid}, due {due}")
        return paid - due


    def tiny(i):
        return i


    def many(n):
        return [tiny(i) for i in range(n)]
"""

TESTS = """
    import pytest
    from shop import checkout, many, total


    @pytest.fixture
    def basket():
        return ["apple", "pear"]


    @pytest.fixture
    def broken():
        return total(["kiwi"])


    @pytest.fixture
    def leaky():
        yield "x"
        checkout(["apple"], 1)


    def test_total(basket):
        assert total(basket) == 7


    def test_change(basket):
        assert checkout(basket, 10) == 2


    def test_unknown():
        print("looking for a kiwi")
        checkout(["apple", "kiwi"], 10)


    def test_caught():
        with pytest.raises(ValueError):
            checkout(["pear"], 1)
        assert many(300)[-1] == 0


    def test_setup_error(broken):
        pass


    def test_teardown_error(leaky):
        assert leaky == "x"


    @pytest.mark.xfail
    def test_xfail():
        assert total(["apple"]) == 4


    @pytest.mark.skip(reason="not today")
    def test_skipped():
        assert total(["kiwi"]) == 0
"""

#: what the sample's failures look like: (report header, section title) -> section text
EXPECTED = {
    ("test_change", "call tree (call)"): """\
→ basket() → ['apple', 'pear']
→ test_change(['apple', 'pear'])
  → checkout(['apple', 'pear'], 10)
    → total(['apple', 'pear'])
      → price('apple') → 3
      → price('pear') → 4
    ← total(['apple', 'pear']) → 7
  ← checkout(['apple', 'pear'], 10) → 3
← test_change(['apple', 'pear']) raised AssertionError: assert 3 == 2 … [propagated]
""",
    ("test_unknown", "call tree (call)"): """\
→ test_unknown()
  → checkout(['apple', 'kiwi'], 10)
    → total(['apple', 'kiwi'])
      → price('apple') → 3
      → price('kiwi') raised KeyError: 'kiwi' [propagated]
    ← total(['apple', 'kiwi']) raised KeyError: 'kiwi' [propagated]
  ← checkout(['apple', 'kiwi'], 10) raised KeyError: 'kiwi' [propagated]
← test_unknown() raised KeyError: 'kiwi' [propagated]
""",
    ("test_caught", "call tree (call)"): """\
→ test_caught()
  → checkout(['pear'], 1)
    → total(['pear'])
      → price('pear') → 4
    ← total(['pear']) → 4
  ← checkout(['pear'], 1) raised ValueError: paid 1, due 4 [caught]
  → many(300)
    → tiny(0) → 0
    → tiny(1) → 1
    → tiny(2) → 2
    → tiny(3) → 3
    → tiny(4) → 4
    → tiny(…) ×295 folded
  ← many(300) → [0, 1, 2, 3, 4, 5, 6, 7, ...+292]
← test_caught() raised AssertionError: assert 299 == 0 [propagated]
""",
    ("ERROR at setup of test_setup_error", "call tree (setup)"): """\
→ broken()
  → total(['kiwi'])
    → price('kiwi') raised KeyError: 'kiwi' [propagated]
  ← total(['kiwi']) raised KeyError: 'kiwi' [propagated]
← broken() raised KeyError: 'kiwi' [propagated]
""",
    ("ERROR at teardown of test_teardown_error", "call tree (teardown)"): """\
→ leaky()
  → checkout(['apple'], 1)
    → total(['apple'])
      → price('apple') → 3
    ← total(['apple']) → 3
  ← checkout(['apple'], 1) raised ValueError: paid 1, due 3 [propagated]
← leaky() raised ValueError: paid 1, due 3 [propagated] (resumed 1×)
→ test_teardown_error('x') → None
""",
}

_SEPARATOR = re.compile(r"^([_=-])\1{2,} (.+?) \1{3,}$")
_SECONDS = re.compile(r" in \d+\.\d+s( \([0-9:]+\))?")


def sections(output: str) -> dict[tuple[str, str], str]:
    """``(report header, section title) -> text`` for every "call tree" section of a run."""
    found: dict[tuple[str, str], str] = {}
    header, title = "", ""
    lines: list[str] = []
    for line in [*output.splitlines(), "=== end ==="]:
        match = _SEPARATOR.match(line)
        if match is None:
            lines.append(line)
            continue
        if title.startswith("call tree"):
            found[(header, title)] = "\n".join(lines) + "\n"
        kind, name = match.groups()
        if kind == "_":
            header = re.sub(r"^\[gw\d+\] ", "", name)
        title, lines = (name, []) if kind == "-" else ("", [])
    return found


def without_trees(output: str) -> str:
    """The run's output with the "call tree" sections and the run's duration left out.

    Separator lines lose their fill: its width depends on the duration's (centred summary).
    """
    kept: list[str] = []
    skipping = False
    for line in output.splitlines():
        match = _SEPARATOR.match(line)
        if match is not None:
            skipping = match.group(2).startswith("call tree")
            line = f"{match.group(1) * 3} {match.group(2)}"
        if not skipping:
            kept.append(_SECONDS.sub(" in (time)", line))
    return "\n".join(kept)


def pytest_run(folder: Path, *args: str, **env: str) -> Run:
    """``python -m pytest ARGS`` in ``folder`` with a clean environment (plus ``env``)."""
    return run([PY, "-m", "pytest", *args], clean_env(**env), folder, timeout=300)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample project: a module and its tests (some fail, in each phase)."""
    folder = tmp_path_factory.mktemp("project")
    write(folder, SHOP, "shop.py")
    write(folder, TESTS, "test_shop.py")
    return folder


@pytest.fixture(scope="module")
def plain(project: Path) -> Run:
    """The sample run untraced."""
    return pytest_run(project, "-p", "no:cacheprovider", "-rA")


@pytest.fixture(scope="module")
def traced(project: Path) -> Run:
    """The sample run with ``--flowtrace`` (no durations, so the trees are exact)."""
    return pytest_run(project, "-p", "no:cacheprovider", "-rA", "--flowtrace",
                      "--flowtrace-no-timing")


def test_failing_tests_show_their_call_tree(plain: Run, traced: Run) -> None:
    """Each failing phase's report has its tree; passing, xfailed and skipped tests add none."""
    assert plain.code == 1, plain.stdout[-3000:]
    assert sections(plain.stdout) == {}
    assert sections(traced.stdout) == EXPECTED, traced.stdout[-6000:]


def test_everything_else_is_unchanged(plain: Run, traced: Run) -> None:
    """Same exit code, same output (captured stdout, tracebacks, summary) but the sections."""
    assert traced.code == plain.code == 1
    assert without_trees(traced.stdout) == without_trees(plain.stdout)
    assert "-- Captured stdout call --" in traced.stdout
    assert traced.stderr == plain.stderr


def test_the_tree_comes_after_the_captured_output(traced: Run) -> None:
    """Like captured stdout, the section belongs to the failure's report, after the traceback."""
    report = traced.stdout.split("_ test_unknown _")[1].split("_ test_caught _")[0]
    assert report.index("KeyError: 'kiwi'") < report.index("Captured stdout call")
    assert report.index("looking for a kiwi") < report.index("- call tree (call) -")


def test_disabled_with_p_no_flowtrace(project: Path, plain: Run) -> None:
    """``-p no:flowtrace`` leaves the plugin out: the untraced run, and the option is unknown."""
    off = pytest_run(project, "-p", "no:cacheprovider", "-rA", "-p", "no:flowtrace")
    assert off.code == plain.code
    (loaded,) = [line for line in plain.stdout.splitlines() if line.startswith("plugins: ")]
    (left_out,) = [line for line in off.stdout.splitlines() if line.startswith("plugins: ")]
    assert "flowtrace-otel" in loaded and "flowtrace-otel" not in left_out
    assert without_trees(off.stdout.replace(left_out, loaded)) == without_trees(plain.stdout)
    refused = pytest_run(project, "-p", "no:cacheprovider", "-p", "no:flowtrace", "--flowtrace")
    assert refused.code == 4
    assert "unrecognized arguments: --flowtrace" in refused.stderr


@pytest.mark.parametrize("selection", [["-x"], ["-k", "total or unknown"]])
def test_x_and_k(project: Path, selection: list[str]) -> None:
    """With ``-x`` and ``-k`` the same tests run, with the same exit code, and fail with trees."""
    args = ["-p", "no:cacheprovider", *selection, "--flowtrace-no-timing"]
    untraced = pytest_run(project, *args[:-1])
    traced = pytest_run(project, *args, "--flowtrace")
    assert traced.code == untraced.code == 1
    assert without_trees(traced.stdout) == without_trees(untraced.stdout)
    shown = sections(traced.stdout)
    if selection == ["-x"]:  # stops at the first failure
        assert shown == {key: EXPECTED[key] for key in [("test_change", "call tree (call)")]}
    else:
        assert shown == {key: EXPECTED[key] for key in [("test_unknown", "call tree (call)")]}


def test_last_failed(project: Path, tmp_path: Path) -> None:
    """``--lf`` reruns the failures of the last run, traced."""
    cache = f"cache_dir={tmp_path / 'cache'}"
    first = pytest_run(project, "-o", cache, "--flowtrace", "--flowtrace-no-timing")
    again = pytest_run(project, "-o", cache, "--lf", "--flowtrace", "--flowtrace-no-timing")
    assert first.code == again.code == 1
    assert "run-last-failure: rerun previous 5 failures" in again.stdout, again.stdout
    assert "3 failed, 1 passed, 2 errors in" in again.stdout
    assert sections(again.stdout) == EXPECTED


def test_xdist_workers(project: Path) -> None:
    """Under ``-n 2`` the sections come back from the workers; outcomes are the same."""
    pytest.importorskip("xdist")
    untraced = pytest_run(project, "-p", "no:cacheprovider", "-n", "2")
    traced = pytest_run(project, "-p", "no:cacheprovider", "-n", "2", "--flowtrace",
                        "--flowtrace-no-timing")
    assert traced.code == untraced.code == 1
    summary = re.compile(r"\d+ failed, \d+ passed, \d+ skipped, \d+ xfailed, \d+ errors")
    assert summary.search(traced.stdout).group() == summary.search(untraced.stdout).group()  # type: ignore[union-attr]
    assert sections(traced.stdout) == EXPECTED


def test_options(project: Path) -> None:
    """``--flowtrace-include/-exclude/-max-repr/-no-result/-links`` shape the section."""
    traced = pytest_run(project, "-p", "no:cacheprovider", "-k", "change", "--flowtrace",
                        "--flowtrace-no-timing", "--flowtrace-exclude", "shop",
                        "--flowtrace-max-repr", "8", "--flowtrace-no-result", "--flowtrace-links")
    assert sections(traced.stdout) == {("test_change", "call tree (call)"): """\
→ basket() test_shop.py:6
→ test_change(['apple…) raised AssertionError: assert 3 == 2 … [propagated] test_shop.py:26
"""}
    only = pytest_run(project, "-p", "no:cacheprovider", "-k", "unknown", "--flowtrace",
                      "--flowtrace-include", "nothing_here")
    assert sections(only.stdout) == {("test_unknown", "call tree (call)"): (
        "flowtrace: no calls recorded: no function that ran matched include 'nothing_here'; a "
        "pattern is a module glob ('myapp', 'myapp.*') or a path glob ('src/*.py')\n")}


def test_timing_is_shown_by_default(project: Path) -> None:
    """Without ``--flowtrace-no-timing`` each line has its duration, as ``flowtrace-otel run``."""
    traced = pytest_run(project, "-p", "no:cacheprovider", "-k", "unknown", "--flowtrace",
                        "--flowtrace-flamegraph", "flames", "--flowtrace-perfetto", "timelines")
    text = sections(traced.stdout)[("test_unknown", "call tree (call)")]
    assert len(re.findall(r" \[\d+\.\d{6}s\]$", text, re.MULTILINE)) == 5, text
    folded = (project / "flames" / "test_shop.py.test_unknown.folded").read_text()
    stacks = {line.rsplit(" ", 1)[0] for line in folded.splitlines()}
    assert "test_unknown;checkout;total;price" in stacks
    timeline = json.loads((project / "timelines" / "test_shop.py.test_unknown.json").read_text())
    slices = {event["name"] for event in timeline["traceEvents"] if event["ph"] == "X"}
    assert slices == {"test_unknown", "checkout", "total", "price"}


def test_every_test_is_exported(project: Path, tmp_path: Path, plain: Run) -> None:
    """The export folders get a file per test that made calls, passing or not.

    Asking for them traces the tests; the sections need ``--flowtrace``.
    """
    flames = tmp_path / "flames"
    done = pytest_run(project, "-p", "no:cacheprovider", "-rA", "--flowtrace-flamegraph",
                      str(flames))
    assert done.code == plain.code
    assert without_trees(done.stdout) == without_trees(plain.stdout)
    assert sections(done.stdout) == {}
    names = sorted(path.name for path in flames.iterdir())
    assert names == [f"test_shop.py.{name}.folded" for name in (
        "test_caught", "test_change", "test_setup_error", "test_teardown_error", "test_total",
        "test_unknown", "test_xfail")], names
    assert "test_total;total;price" in (flames / "test_shop.py.test_total.folded").read_text()


def test_file_names() -> None:
    """Node ids become readable, distinct file names."""
    assert file_name("tests/test_a.py::TestX::test_y") == "tests.test_a.py.TestX.test_y"
    assert file_name("t.py::test[1-2]") == "t.py.test[1-2]"
    spaced, slashed = file_name("t.py::test[a b]"), file_name("t.py::test[a/b]")
    assert spaced.startswith("t.py.test[a_b]-") and spaced != slashed
    assert len(file_name("t.py::test[" + "x" * 500 + "]")) < 170


# --- the plugin off, and the program's own tracing ------------------------------------------

PROBE = """
    import sys

    def work(n):
        return n * 2

    def test_probe():
        from flowtrace_otel import TraceSession
        print("tools", sys.monitoring.get_tool(3), sys.monitoring.get_tool(4))
        print("plugin loaded", "flowtrace_otel.pytest_plugin" in sys.modules)
        print("opentelemetry", any(m.startswith("opentelemetry") for m in sys.modules))
        with TraceSession(max_repr=5) as session:
            work(21)
        print("own session", [(e.func_name, e.result_repr) for e in session.events])
"""


@pytest.mark.parametrize("flag", ["", "--flowtrace"])
def test_off_unless_asked_and_invisible_to_the_tests(flag: str, tmp_path: Path) -> None:
    """Loaded, the plugin traces nothing; asked, it holds a tool id but the test's session
    sees its own calls only, and OpenTelemetry is never imported."""
    write(tmp_path, PROBE, "test_probe.py")
    done = pytest_run(tmp_path, "-p", "no:cacheprovider", "-s", "-q", *[f for f in [flag] if f])
    assert done.code == 0, done.stdout
    assert "plugin loaded True" in done.stdout
    assert "opentelemetry False" in done.stdout
    assert "own session [('work', '42')]" in done.stdout
    tools = "tools flowtrace_otel None" if flag else "tools None None"
    assert tools in done.stdout, done.stdout


def test_tool_ids_taken_the_tests_run_untraced_with_a_warning(tmp_path: Path) -> None:
    """When another tool holds both free ``sys.monitoring`` ids, pytest runs as untraced."""
    write(tmp_path, """
        import sys
        sys.monitoring.use_tool_id(3, "other-a")
        sys.monitoring.use_tool_id(4, "other-b")
    """, "conftest.py")
    write(tmp_path, "def test_one():\n    assert 1 == 2\n\ndef test_two():\n    pass\n",
          "test_ids.py")
    plain = pytest_run(tmp_path, "-p", "no:cacheprovider")
    traced = pytest_run(tmp_path, "-p", "no:cacheprovider", "--flowtrace")
    assert traced.code == plain.code == 1
    assert sections(traced.stdout) == {}
    assert "1 failed, 1 passed, 1 warning in" in traced.stdout
    assert "flowtrace: the tests run untraced: " in traced.stdout
    assert "other-a" in traced.stdout and "other-b" in traced.stdout


# --- FLOWTRACE_OTEL=1: a span per test --------------------------------------------------------

@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """A live OTLP/HTTP receiver for the module."""
    with OtlpReceiver(grpc=False) as running:
        yield running


def test_spans(project: Path, receiver: OtlpReceiver) -> None:
    """Under FLOWTRACE_OTEL=1 each test is a root span with the test's calls under it."""
    receiver.clear()
    done = pytest_run(project, "-p", "no:cacheprovider", FLOWTRACE_OTEL="1", **receiver.env())
    assert done.code == 1
    check_test_spans(receiver, project)


def test_spans_from_xdist_workers_with_the_tree(project: Path, receiver: OtlpReceiver) -> None:
    """``-n 2`` with ``--flowtrace`` and FLOWTRACE_OTEL=1: spans from both workers, and trees."""
    pytest.importorskip("xdist")
    receiver.clear()
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    done = pytest_run(project, "-p", "no:cacheprovider", "-n", "2", "--flowtrace",
                      "--flowtrace-no-timing", FLOWTRACE_OTEL="1", **receiver.env(),
                      TRACEPARENT=f"00-{trace_id}-{span_id}-01")
    assert done.code == 1
    assert "2 workers [8 items]" in done.stdout
    assert sections(done.stdout) == EXPECTED
    check_test_spans(receiver, project, (trace_id, span_id))


def check_test_spans(receiver: OtlpReceiver, project: Path,
                     parent: tuple[str, str] | None = None) -> None:
    """The sample's test spans: names, outcomes, attributes, and the calls under each.

    ``parent``: the (trace id, span id) of TRACEPARENT, every test span's parent; else each
    test is a trace of its own.
    """
    outcomes = {"test_total": "passed", "test_change": "failed", "test_unknown": "failed",
                "test_caught": "failed", "test_setup_error": "error",
                "test_teardown_error": "error", "test_xfail": "xfailed",
                "test_skipped": "skipped"}
    # spans of the skipped test: 1; of the calls: at least 26
    spans = receiver.wait_for_spans(len(outcomes) + 26)
    tests = {s["name"].split("::")[1]: s for s in spans if s["scope"] == "flowtrace_otel.pytest"}
    assert {name: s["attributes"]["test.outcome"] for name, s in tests.items()} == outcomes
    change = tests["test_change"]
    assert change["parent_id"] == (parent[1] if parent else None)
    assert change["status"] == "STATUS_CODE_ERROR"
    assert change["status_message"] == "AssertionError: assert 3 == 2"
    assert change["attributes"] == {
        "test.name": "test_shop.py::test_change", "test.case.name": "test_shop.py::test_change",
        "code.file.path": str(project / "test_shop.py"), "code.line.number": 26,
        "code.function.name": "test_shop.test_change", "test.outcome": "failed",
        "test.case.result.status": "fail"}
    assert tests["test_total"]["status"] == "STATUS_CODE_UNSET"
    assert tests["test_total"]["attributes"]["test.case.result.status"] == "pass"

    def children(span: dict[str, object]) -> list[str]:
        return sorted(str(s["name"]) for s in spans if s["parent_id"] == span["span_id"])

    assert children(change) == ["basket", "test_change"]
    (body,) = [s for s in spans if s["parent_id"] == change["span_id"]
               and s["name"] == "test_change"]
    (checkout,) = [s for s in spans if s["parent_id"] == body["span_id"]]
    assert children(checkout) == ["total"]
    assert children(tests["test_setup_error"]) == ["broken"]
    assert children(tests["test_teardown_error"]) == ["leaky", "test_teardown_error"]
    assert children(tests["test_skipped"]) == []
    traces = {s["trace_id"] for s in tests.values()}
    if parent is None:
        assert len(traces) == len(outcomes)  # a trace per test
    else:  # all under the CI job's span
        assert traces == {parent[0]}
        assert {s["parent_id"] for s in tests.values()} == {parent[1]}


# --- coverage ---------------------------------------------------------------------------------

@pytest.mark.parametrize("core", ["ctrace", "sysmon"])
def test_under_coverage(core: str, project: Path, tmp_path: Path) -> None:
    """``coverage run -m pytest --flowtrace``: the same lines measured, the same trees shown."""
    measured = {}
    for name, flags in (("plain", []), ("traced", ["--flowtrace", "--flowtrace-no-timing"])):
        data = tmp_path / f"{name}.coverage"
        env = clean_env(COVERAGE_CORE=core)
        done = run([PY, "-m", "coverage", "run", f"--data-file={data}", "--include=*shop.py",
                    "-m", "pytest", "-p", "no:cacheprovider", *flags], env, project, timeout=300)
        assert done.code == 1, done.stdout[-3000:]
        if flags:
            assert sections(done.stdout) == EXPECTED
        report = tmp_path / f"{name}.json"
        json_done = run([PY, "-m", "coverage", "json", f"--data-file={data}", "-o", str(report)],
                        env, project)
        assert json_done.code == 0, json_done.stderr
        files = json.loads(report.read_text())["files"]
        measured[name] = {Path(k).name: v["executed_lines"] for k, v in files.items()}
    assert measured["traced"] == measured["plain"]
    assert set(measured["plain"]) == {"shop.py", "test_shop.py"}
