"""Every example in examples/ runs, alone and traced, and its trace has the promised shape.

Each example is run three ways, as a user would type it from the repository root:
``python examples/NAME.py`` (the reference output), ``flowtrace-otel run examples/NAME.py``
(the tree on stderr, the events as JSON) and ``FLOWTRACE_OTEL=1 python examples/NAME.py``
against a real OTLP receiver over http/protobuf. Output and exit code must be identical; the
tree and the spans must show the structure the example's docstring describes.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowtrace_otel.testing import OtlpReceiver

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.py"))
PY = sys.executable
Event = dict[str, Any]
Span = dict[str, Any]


# --- running -------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without tracer/OTel settings, plus ``extra``."""
    env = {key: value for key, value in os.environ.items()
           if key == "FLOWTRACE_OTEL_CORE"  # the core under test
           or not key.startswith(("FLOWTRACE_OTEL", "OTEL_", "COVERAGE_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    env["PYTHONIOENCODING"] = "utf-8"
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def cli() -> list[str]:
    """The ``flowtrace-otel`` command of the running interpreter's environment."""
    script = Path(PY).parent / "flowtrace-otel"
    return [str(script)] if script.exists() else [PY, "-m", "flowtrace_otel"]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root, the way the README tells users to."""
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


_PLAIN: dict[str, subprocess.CompletedProcess[str]] = {}


def plain(name: str) -> subprocess.CompletedProcess[str]:
    """The untraced run of an example (run once per test session)."""
    if name not in _PLAIN:
        _PLAIN[name] = run([PY, f"examples/{name}.py"], clean_env())
    return _PLAIN[name]


def traced_by_cli(name: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str],
                                                     list[Event]]:
    """``flowtrace-otel run`` of an example: the process and its events (from --json)."""
    out = tmp_path / f"{name}.json"
    proc = run([*cli(), "run", "--no-timing", "--json", str(out), f"examples/{name}.py"],
               clean_env())
    events = json.loads(out.read_text()) if out.exists() else []
    return proc, events


# --- the tree (events from --json) ---------------------------------------------------------
def named(events: list[Event], func: str) -> list[Event]:
    """Events of one function, in call order."""
    found = [event for event in events if event["func_name"] == func]
    assert found, f"no call of {func} in {sorted({e['func_name'] for e in events})}"
    return sorted(found, key=lambda event: event["id"])


def parent(events: list[Event], event: Event) -> Event | None:
    """The event's caller, if traced."""
    return next((e for e in events if e["id"] == event["parent_id"]), None)


def assert_parents(events: list[Event], child: str, expected_parent: str, count: int) -> None:
    """Exactly ``count`` calls of ``child``, each called by ``expected_parent``."""
    calls = named(events, child)
    assert len(calls) == count, (child, len(calls))
    for call in calls:
        caller = parent(events, call)
        assert caller is not None and caller["func_name"] == expected_parent, (
            f"{child}({call['args_repr']}) called by "
            f"{caller['func_name'] if caller else None}, expected {expected_parent}")


def check_quickstart(events: list[Event]) -> None:
    assert_parents(events, "checkout", "main", 1)
    assert_parents(events, "price", "checkout", 3)
    assert_parents(events, "total", "checkout", 1)
    fibs = named(events, "fib")
    assert len(fibs) == 5 and parent(events, fibs[0])["func_name"] == "main"  # type: ignore[index]
    kiwi = next(e for e in named(events, "price") if "'kiwi'" in e["args_repr"])
    assert (kiwi["exc_type"], kiwi["exc_state"]) == ("KeyError", "caught")
    assert named(events, "checkout")[0]["status"] == "returned"


def check_flask_service(events: list[Event]) -> None:
    assert_parents(events, "place_orders", "main", 1)
    assert_parents(events, "check_stock", "order", 2)
    assert_parents(events, "count_in_stock", "stock", 2)
    main = named(events, "main")[0]
    for view in named(events, "order") + named(events, "stock"):
        assert view["thread_id"] != main["thread_id"]   # served by the server's threads
    assert [e["args_repr"] for e in named(events, "order")] == ["'apple'", "'pear'"]


def check_asyncio_fanout(events: list[Event]) -> None:
    assert_parents(events, "fetch_price", "gather_prices", 3)
    assert_parents(events, "score", "score_all", 3)
    assert_parents(events, "heartbeat", "refresh", 1)
    assert_parents(events, "beat", "heartbeat", 3)
    assert [e["task"] for e in named(events, "score")] == ["score-0", "score-1", "score-2"]
    assert named(events, "heartbeat")[0]["task"] == "heartbeat"
    assert all(e["task"] for e in named(events, "fetch_price"))
    assert named(events, "heartbeat")[0]["resumes"] == 3


def check_threads_executor(events: list[Event]) -> None:
    assert_parents(events, "worker", "run_threads", 3)
    assert_parents(events, "resize", "worker", 3)
    assert_parents(events, "checksum", "run_pool", 4)
    main_thread = named(events, "main")[0]["thread_id"]
    assert main_thread not in {e["thread_id"] for e in named(events, "worker")}
    assert main_thread not in {e["thread_id"] for e in named(events, "checksum")}


def check_generator_pipeline(events: list[Event]) -> None:
    assert_parents(events, "only_valid", "pipeline", 1)
    assert_parents(events, "parse", "only_valid", 1)
    assert_parents(events, "read_records", "parse", 1)
    assert_parents(events, "running_average", "averages", 1)
    assert_parents(events, "numbers", "first_two", 1)
    assert named(events, "read_records")[0]["resumes"] == 5
    assert named(events, "running_average")[0]["status"] == "closed"
    assert named(events, "numbers")[0]["status"] == "closed"


def check_exceptions(events: list[Event]) -> None:
    bad = next(e for e in named(events, "parse_amount") if e["args_repr"] == "'ten'")
    assert (bad["exc_type"], bad["exc_state"]) == ("ValueError", "caught")
    assert all(e["status"] == "returned" for e in named(events, "safe_parse"))
    refused = next(e for e in named(events, "withdraw") if e["args_repr"] == "'alice', 80")
    assert (refused["exc_type"], refused["exc_state"]) == ("InsufficientFunds", "propagated")
    assert refused["exc_msg"] == "need 80, have 30"
    transfer = parent(events, refused)
    assert transfer is not None and transfer["func_name"] == "transfer"
    assert (transfer["exc_type"], transfer["exc_state"]) == ("InsufficientFunds", "caught")
    [charge] = named(events, "charge")
    assert (charge["exc_type"], charge["exc_state"]) == ("PaymentError", "caught")
    assert named(events, "main")[0]["status"] == "returned"


TREE_CHECKS: dict[str, Callable[[list[Event]], None]] = {
    "quickstart": check_quickstart,
    "flask_service": check_flask_service,
    "asyncio_fanout": check_asyncio_fanout,
    "threads_executor": check_threads_executor,
    "generator_pipeline": check_generator_pipeline,
    "exceptions": check_exceptions,
}

# lines the printed tree must hold (indentation included: it is the structure)
TREE_LINES = {
    "quickstart": ["→ main()", "  → checkout({'apple': 4, 'kiwi': 1, 'pear': 2})",
                   "    → price('kiwi', 1) raised KeyError: 'kiwi' [caught]"],
    "flask_service": ["→ main()", "  → place_orders('http://127.0.0.1:"],  # views: JSON checks
    "asyncio_fanout": ["  → score_all(3)", "    → score(0) {task score-0}",
                       "    → heartbeat(3) {task heartbeat}", "      → beat(2)"],
    "threads_executor": ["  → run_threads(['cat.png', 'dog.png', 'fox.png'])",
                         "      → resize('cat.png', 128)", "    → checksum(b'alphabetagamma')"],
    "generator_pipeline": ["      → parse(<generator>)", "    → numbers(1000) [closed]"],
    "exceptions": ["    ← withdraw('alice', 80) raised InsufficientFunds: need 80, have 30 "
                   "[propagated]", "  ← charge('carol', 5) raised PaymentError: no account "
                   "'carol' [caught]"],
}


# --- tests: the examples themselves --------------------------------------------------------
def test_every_example_has_checks() -> None:
    for checks in (TREE_CHECKS, TREE_LINES, SPAN_COUNTS, SPAN_PARENTS):
        assert NAMES == sorted(checks)


@pytest.mark.parametrize("name", NAMES)
def test_example_is_a_plain_program_that_says_what_its_trace_shows(name: str) -> None:
    tree = ast.parse((EXAMPLES / f"{name}.py").read_text())
    doc = ast.get_docstring(tree)
    assert doc and f"FLOWTRACE_OTEL=1 python examples/{name}.py" in doc
    assert f"flowtrace-otel run examples/{name}.py" in doc and "trace" in doc
    for node in ast.walk(tree):
        modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                   else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        assert not any(module.startswith("flowtrace_otel") for module in modules), name
    proc = plain(name)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


# --- tests: flowtrace-otel run ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_example_under_cli_keeps_output_and_prints_the_tree(name: str, tmp_path: Path) -> None:
    proc, events = traced_by_cli(name, tmp_path)
    reference = plain(name)
    assert proc.returncode == reference.returncode == 0, proc.stderr
    assert proc.stdout == reference.stdout
    for line in TREE_LINES[name]:
        assert any(printed.startswith(line) for printed in proc.stderr.splitlines()), (
            f"{line!r} not in the tree:\n{proc.stderr}")
    TREE_CHECKS[name](events)


def test_thread_names_are_the_threads_own(tmp_path: Path) -> None:
    """The tree names a thread as the program named it (``{thread worker-0}``)."""
    proc, events = traced_by_cli("threads_executor", tmp_path)
    assert sorted(e["thread_name"] for e in named(events, "worker")) == [
        "worker-0", "worker-1", "worker-2"]
    assert all(e["thread_name"].startswith("pool") for e in named(events, "checksum"))
    assert "{thread worker-0}" in proc.stderr


def test_class_bodies_are_not_calls(tmp_path: Path) -> None:
    """A ``class`` statement runs its body as code, but it is not a function call."""
    _, events = traced_by_cli("exceptions", tmp_path)
    assert not CLASS_BODIES & {e["func_name"] for e in events}


# --- tests: FLOWTRACE_OTEL=1 against a real OTLP receiver ----------------------------------
SPAN_COUNTS = {  # function spans each example makes (library spans come on top)
    "quickstart": 11, "flask_service": 10, "asyncio_fanout": 14, "threads_executor": 13,
    "generator_pipeline": 9, "exceptions": 12,
}
CLASS_BODIES = {"InsufficientFunds", "PaymentError"}  # see test_class_bodies_are_not_calls


@pytest.fixture(scope="module")
def receiver() -> Any:
    """One OTLP receiver for the module's runs."""
    with OtlpReceiver(grpc=False) as running:
        yield running


_EXPORTED: dict[tuple[str, bool], tuple[subprocess.CompletedProcess[str], list[Span]]] = {}


def exported(name: str, receiver: OtlpReceiver, instrumented: bool = False) -> tuple[
        subprocess.CompletedProcess[str], list[Span]]:
    """Run an example with FLOWTRACE_OTEL=1 (once), under ``opentelemetry-instrument`` when
    ``instrumented``; return the process and the spans of its service."""
    if (name, instrumented) not in _EXPORTED:
        service = f"example-{name}{'-instrumented' if instrumented else ''}"
        env = clean_env(FLOWTRACE_OTEL="1", OTEL_SERVICE_NAME=service,
                        OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
                        **receiver.env("http/protobuf"))
        launcher = [str(Path(PY).parent / "opentelemetry-instrument")] if instrumented else []
        proc = run([*launcher, PY, f"examples/{name}.py"], env)
        # spans are flushed before the process exits, and the receiver stores a request
        # before it answers it: everything is there now
        mine = [s for s in receiver.spans() if s["resource"].get("service.name") == service]
        _EXPORTED[name, instrumented] = proc, mine
    return _EXPORTED[name, instrumented]


def one(spans: list[Span], **match: Any) -> Span:
    """The single span with these fields (``name``, ``kind``, ``parent_id``...)."""
    found = [s for s in spans if all(s[key] == value for key, value in match.items())]
    assert len(found) == 1, f"{len(found)} spans match {match}: " + ", ".join(
        f"{s['name']}<{s['parent_id']}" for s in spans)
    return found[0]


def children(spans: list[Span], span: Span, **match: Any) -> list[Span]:
    """The children of ``span`` that have these fields, in start order."""
    return sorted((s for s in spans if s["parent_id"] == span["span_id"]
                   and all(s[key] == value for key, value in match.items())),
                  key=lambda s: s["start"])


def child(spans: list[Span], span: Span, **match: Any) -> Span:
    """The single child of ``span`` with these fields."""
    found = children(spans, span, **match)
    assert len(found) == 1, (span["name"], match, [s["name"] for s in found])
    return found[0]


def check_function_span(span: Span, name: str) -> None:
    """The code attributes of a function span of examples/NAME.py."""
    attributes = span["attributes"]
    assert attributes["code.function.name"].endswith("." + span["name"])
    assert attributes["code.file.path"].endswith(f"examples/{name}.py")
    assert isinstance(attributes["code.line.number"], int) and attributes["code.line.number"] > 0
    assert span["kind"] == "SPAN_KIND_INTERNAL"


@pytest.mark.parametrize("name", NAMES)
def test_example_exports_one_trace_over_otlp(name: str, receiver: OtlpReceiver) -> None:
    proc, spans = exported(name, receiver)
    reference = plain(name)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reference.stdout
    functions = [s for s in spans if s["attributes"].get("code.file.path", "").endswith(
        f"examples/{name}.py") and s["name"] not in CLASS_BODIES]
    assert len(functions) == SPAN_COUNTS[name], sorted(s["name"] for s in functions)
    for span in functions:
        check_function_span(span, name)
    root = one(spans, name="main")
    assert root["parent_id"] is None
    assert {s["trace_id"] for s in functions} == {root["trace_id"]}


# child function -> the functions its span may hang under, for FLOWTRACE_OTEL=1 runs
SPAN_PARENTS: dict[str, dict[str, set[str]]] = {
    "quickstart": {"checkout": {"main"}, "price": {"checkout"}, "total": {"checkout"},
                   "fib": {"main", "fib"}},
    "flask_service": {"place_orders": {"main"}, "order": {"place_orders"},
                      "check_stock": {"order"}, "stock": {"check_stock"},
                      "count_in_stock": {"stock"}},
    "asyncio_fanout": {"gather_prices": {"main"}, "fetch_price": {"gather_prices"},
                       "score": {"score_all"}, "heartbeat": {"refresh"}, "beat": {"heartbeat"}},
    "threads_executor": {"worker": {"run_threads"}, "resize": {"worker"},
                         "checksum": {"run_pool"}},
    "generator_pipeline": {"only_valid": {"pipeline"}, "parse": {"only_valid"},
                           "read_records": {"parse"}, "running_average": {"averages"},
                           "numbers": {"first_two"}},
    "exceptions": {"parse_amount": {"safe_parse"}, "withdraw": {"transfer", "charge"},
                   "InsufficientFunds.__init__": {"withdraw"}, "charge": {"main"}},
}


@pytest.mark.parametrize("name", NAMES)
def test_example_spans_hang_under_their_callers(name: str, receiver: OtlpReceiver) -> None:
    _, spans = exported(name, receiver)
    by_id = {s["span_id"]: s for s in spans}
    for child_name, parents in SPAN_PARENTS[name].items():
        found = [s for s in spans if s["name"] == child_name]
        assert found, child_name
        for span in found:
            parent = by_id.get(span["parent_id"])
            assert parent is not None and parent["name"] in parents, (
                f"{child_name} under {parent['name'] if parent else None}, expected {parents}")


def function_parent(spans: list[Span], span: Span) -> Span | None:
    """The nearest ancestor that is a function span (library spans skipped)."""
    by_id = {s["span_id"]: s for s in spans}
    parent = by_id.get(span["parent_id"])
    while parent is not None and "code.function.name" not in parent["attributes"]:
        parent = by_id.get(parent["parent_id"])
    return parent


def test_flask_functions_form_one_tree_across_http(receiver: OtlpReceiver) -> None:
    """Without an SDK set up by the application, the instrumentations' spans are not recorded,
    but their context still crosses each HTTP hop: the function spans are one tree."""
    _, spans = exported("flask_service", receiver)
    expected = {"place_orders": "main", "order": "place_orders", "check_stock": "order",
                "stock": "check_stock", "count_in_stock": "stock"}
    for name, parent_name in expected.items():
        for span in (s for s in spans if s["name"] == name):
            parent = function_parent(spans, span)
            assert parent is not None and parent["name"] == parent_name, (name, parent)


def test_flask_chain_under_opentelemetry_instrument(receiver: OtlpReceiver) -> None:
    """place_orders -> CLIENT -> SERVER -> order -> check_stock -> CLIENT -> SERVER -> stock."""
    proc, spans = exported("flask_service", receiver, instrumented=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plain("flask_service").stdout
    assert proc.stderr == "", proc.stderr
    place = child(spans, one(spans, name="main"), name="place_orders")
    assert place["attributes"]["flowtrace.arg.items"] == "['apple', 'pear']"
    requests_out = children(spans, place, kind="SPAN_KIND_CLIENT")
    assert len(requests_out) == 2
    for client, item, count in zip(requests_out, ["apple", "pear"], [3, 0], strict=True):
        server = child(spans, client, kind="SPAN_KIND_SERVER")
        assert server["attributes"]["http.route"] == "/order/<item>"
        order = child(spans, server, name="order")
        assert order["attributes"]["flowtrace.arg.item"] == repr(item)
        check = child(spans, order, name="check_stock")
        inner_client = child(spans, check, kind="SPAN_KIND_CLIENT")
        inner_server = child(spans, inner_client, kind="SPAN_KIND_SERVER")
        assert inner_server["attributes"]["http.route"] == "/stock/<item>"
        stock = child(spans, inner_server, name="stock")
        counted = child(spans, stock, name="count_in_stock")
        assert counted["attributes"]["flowtrace.return"] == str(count)
        assert check["attributes"]["flowtrace.return"] == str(count)
    assert len(spans) == SPAN_COUNTS["flask_service"] + 8     # + 4 SERVER and 4 CLIENT spans
    assert len({s["trace_id"] for s in spans}) == 1


def test_exceptions_set_status_and_events(receiver: OtlpReceiver) -> None:
    """ERROR where an exception left a function; nothing where it was handled inside."""
    _, spans = exported("exceptions", receiver)
    main = one(spans, name="main")
    assert main["status"] == "STATUS_CODE_UNSET"
    transfers = children(spans, main, name="transfer")
    assert [t["status"] for t in transfers] == ["STATUS_CODE_UNSET", "STATUS_CODE_ERROR"]
    refused = child(spans, transfers[1], name="withdraw")
    assert refused["status"] == "STATUS_CODE_ERROR"
    assert "need 80, have 30" in refused["status_message"]
    [event] = [e for e in refused["events"] if e["name"] == "exception"]
    assert event["attributes"]["exception.type"].endswith("InsufficientFunds")
    assert event["attributes"]["exception.message"] == "need 80, have 30"
    assert "Traceback" in event["attributes"]["exception.stacktrace"]
    safe = children(spans, main, name="safe_parse")
    assert [s["status"] for s in safe] == ["STATUS_CODE_UNSET", "STATUS_CODE_UNSET"]
    bad = child(spans, safe[1], name="parse_amount")
    assert bad["status"] == "STATUS_CODE_ERROR"
    charge = child(spans, main, name="charge")
    assert charge["status"] == "STATUS_CODE_ERROR" and "carol" in charge["status_message"]
