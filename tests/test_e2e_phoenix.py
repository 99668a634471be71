"""End to end against a real OTLP trace backend: Arize Phoenix, over gRPC and over http/protobuf.

Phoenix (PyPI ``arize-phoenix``) is the one real OTLP server that installs here without Docker.
It lives in its own virtualenv (``.venv-phoenix``, or the interpreter named by
``FLOWTRACE_PHOENIX_PYTHON``); ``./dev test --e2e`` (what CI runs) installs it. The test starts
``phoenix serve`` on free local ports with a throw-away working directory, runs examples with
``FLOWTRACE_OTEL=1``, reads the spans back over Phoenix's REST API and checks the tree: parents,
trace ids, attributes, status and exception events.

Each run exports to a Phoenix project of its own (resource attribute
``openinference.project.name``), so runs never see each other's spans.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.phoenix]

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DEFAULT_PHOENIX_PYTHON = ROOT / ".venv-phoenix" / "bin" / "python"
PROTOCOLS = ("grpc", "http/protobuf")
START_TIMEOUT = 180.0   # Phoenix takes ~20 s to start here, more on a busy CI machine
INGEST_TIMEOUT = 60.0   # Phoenix ingests about 100 spans/s here
CLASS_BODIES = {"InsufficientFunds", "PaymentError"}
# spans each run must deliver: function spans, plus the Flask SERVER and requests CLIENT spans
EXPECTED = {"exceptions": 12, "flask_service": 10 + 4 + 4}
# run under opentelemetry-instrument, whose SDK records the Flask and requests spans (and whose
# provider the bridge then uses); the others go through the bridge's own pipeline
INSTRUMENTED = {"flask_service"}
Span = dict[str, Any]


def phoenix_python() -> Path:
    """The interpreter that has Phoenix installed, or a failure that says how to get one."""
    configured = os.environ.get("FLOWTRACE_PHOENIX_PYTHON")
    python = Path(configured) if configured else DEFAULT_PHOENIX_PYTHON
    found = python.exists() and subprocess.run(  # the metadata: importing Phoenix takes seconds
        [str(python), "-c", "import importlib.metadata as m; m.version('arize-phoenix')"],
        capture_output=True, timeout=60, check=False).returncode == 0
    if not found:
        pytest.fail(
            f"Arize Phoenix is not installed for the end-to-end test (looked for {python}). "
            "Install it with `./dev test --e2e` (it does so when missing), or by hand: "
            "`python3.12 -m venv .venv-phoenix && .venv-phoenix/bin/pip install arize-phoenix`, "
            "or point FLOWTRACE_PHOENIX_PYTHON at a Python that has it. "
            "Locally you may deselect these tests with `-m 'not slow'`.", pytrace=False)
    return python


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without tracer/OTel/Phoenix settings, plus ``extra``."""
    env = {key: value for key, value in os.environ.items()
           if key == "FLOWTRACE_OTEL_CORE"  # the core under test
           or not key.startswith(("FLOWTRACE_OTEL", "OTEL_", "PHOENIX_", "COVERAGE_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def http_get(url: str) -> tuple[int, bytes]:
    """Status and body of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class Phoenix:
    """A ``phoenix serve`` process on free local ports."""

    def __init__(self, python: Path, workdir: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.log = workdir / "phoenix.log"
        env = clean_env(
            PHOENIX_WORKING_DIR=str(workdir), PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(self.http_port), PHOENIX_GRPC_PORT=str(self.grpc_port),
            PHOENIX_TELEMETRY_ENABLED="false", PHOENIX_AGENTS_DISABLE_BASH="true",
            PHOENIX_AGENTS_DISABLE_WEB_ACCESS="true")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(python), "-m", "phoenix.server.main", "serve"], cwd=workdir, env=env,
                stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        """The end of Phoenix's output, for failure messages."""
        return self.log.read_text(errors="replace")[-3000:]

    def wait_ready(self) -> None:
        """Poll the HTTP port until Phoenix answers, and the gRPC port until it accepts."""
        deadline = time.monotonic() + START_TIMEOUT
        while http_get(f"{self.base}/healthz")[0] != 200:
            if self.process.poll() is not None:
                pytest.fail(f"phoenix serve exited with {self.process.returncode}:\n"
                            f"{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"phoenix serve not ready after {START_TIMEOUT} s:\n"
                            f"{self.log_tail()}")
            time.sleep(0.2)  # polling interval, not a wait for a guessed duration
        with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=10):
            pass

    def spans(self, project: str) -> list[Span]:
        """Every span of a project (an unknown project has none)."""
        spans: list[Span] = []
        cursor = ""
        while True:
            status, body = http_get(f"{self.base}/v1/projects/{project}/spans?limit=1000{cursor}")
            if status == 404:
                return spans
            assert status == 200, (status, body[:500])
            page = json.loads(body)
            spans.extend(page["data"])
            if not page.get("next_cursor"):
                return spans
            cursor = f"&cursor={page['next_cursor']}"

    def wait_for_spans(self, project: str, count: int) -> list[Span]:
        """Poll until the project holds ``count`` spans that are not class bodies (or the
        ingest timeout passed); return those."""
        deadline = time.monotonic() + INGEST_TIMEOUT
        while True:
            spans = [s for s in self.spans(project) if s["name"] not in CLASS_BODIES]
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)  # polling interval

    def stop(self) -> None:
        """Stop the server and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """One Phoenix server for the module."""
    server = Phoenix(phoenix_python(), tmp_path_factory.mktemp("phoenix"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


_RUNS: dict[tuple[str, str], tuple[subprocess.CompletedProcess[str], list[Span]]] = {}


def exported(phoenix: Phoenix, example: str, protocol: str) -> list[Span]:
    """Run ``examples/EXAMPLE.py`` with FLOWTRACE_OTEL=1 over ``protocol``; Phoenix's spans."""
    key = (example, protocol)
    if key not in _RUNS:
        project = f"e2e-{example}-{protocol.replace('/', '-')}".replace("_", "-")
        if protocol == "grpc":
            endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{phoenix.grpc_port}",
                        "OTEL_EXPORTER_OTLP_INSECURE": "true"}
        else:  # the signal-specific variable is the full URL, used as it is
            endpoint = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{phoenix.base}/v1/traces"}
        env = clean_env(FLOWTRACE_OTEL="1", OTEL_SERVICE_NAME=f"e2e-{example}",
                        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
                        OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={project}",
                        OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none", **endpoint)
        launcher = [str(Path(PY).parent / "opentelemetry-instrument")] if (
            example in INSTRUMENTED) else []
        proc = subprocess.run([*launcher, PY, f"examples/{example}.py"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        spans = phoenix.wait_for_spans(project, EXPECTED[example]) if proc.returncode == 0 else []
        _RUNS[key] = proc, spans
    proc, spans = _RUNS[key]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Failed to export" not in proc.stderr, proc.stderr
    return spans


# --- reading the tree back -----------------------------------------------------------------
def span_id(span: Span) -> str:
    """A Phoenix span's id."""
    value: str = span["context"]["span_id"]
    return value


def kids(spans: list[Span], parent: Span, name: str | None = None) -> list[Span]:
    """Children of ``parent`` (named ``name``), in start order."""
    return sorted((s for s in spans if s["parent_id"] == span_id(parent)
                   and (name is None or s["name"] == name)), key=lambda s: s["start_time"])


def only(found: list[Span], what: str) -> Span:
    """The single span in ``found``."""
    assert len(found) == 1, f"{len(found)} spans for {what}: {[s['name'] for s in found]}"
    return found[0]


def functions(spans: list[Span]) -> list[Span]:
    """The function spans (the library spans have no ``code.function.name``)."""
    return [s for s in spans if "code.function.name" in s["attributes"]]


def first_lines(example: str) -> dict[str, int]:
    """Where each function of an example starts, as ``co_firstlineno`` counts (decorators)."""
    tree = ast.parse((ROOT / "examples" / f"{example}.py").read_text())
    return {node.name: min([node.lineno, *(d.lineno for d in node.decorator_list)])
            for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def check_code_attributes(spans: list[Span], example: str) -> None:
    """Every function span names its function, file and line like the source does."""
    lines = first_lines(example)
    for span in functions(spans):
        attributes = span["attributes"]
        short = span["name"].rsplit(".", 1)[-1]
        assert attributes["code.function.name"] == f"__main__.{span['name']}"
        assert attributes["code.file.path"] == str(ROOT / "examples" / f"{example}.py")
        assert attributes["code.line.number"] == lines[short], span["name"]


# --- tests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_exceptions_round_trip(phoenix: Phoenix, protocol: str) -> None:
    spans = exported(phoenix, "exceptions", protocol)
    assert len(spans) == EXPECTED["exceptions"], sorted(s["name"] for s in spans)
    check_code_attributes(spans, "exceptions")
    main = only([s for s in spans if s["name"] == "main"], "main")
    assert main["parent_id"] is None and main["status_code"] == "UNSET"
    assert {s["context"]["trace_id"] for s in spans} == {main["context"]["trace_id"]}

    ok, refused = kids(spans, main, "transfer")
    assert ok["status_code"] == "UNSET"
    assert ok["attributes"]["flowtrace.arg.amount"] == "20"
    assert refused["status_code"] == "ERROR"
    assert "need 80, have 30" in refused["status_message"]
    withdraw = only(kids(spans, refused, "withdraw"), "withdraw under transfer")
    assert withdraw["attributes"]["flowtrace.arg.account"] == "'alice'"
    assert withdraw["status_code"] == "ERROR"
    [event] = [e for e in withdraw["events"] if e["name"] == "exception"]
    assert event["attributes"]["exception.type"].endswith("InsufficientFunds")
    assert event["attributes"]["exception.message"] == "need 80, have 30"
    assert "in withdraw" in event["attributes"]["exception.stacktrace"]

    good, bad = kids(spans, main, "safe_parse")       # handled inside: not an error
    assert good["status_code"] == bad["status_code"] == "UNSET"
    assert good["attributes"]["flowtrace.return"] == "25"
    assert bad["attributes"]["flowtrace.return"] == "0"
    failing = only(kids(spans, bad, "parse_amount"), "parse_amount under safe_parse('ten')")
    assert failing["status_code"] == "ERROR" and "ValueError" in json.dumps(failing["events"])

    charge = only(kids(spans, main, "charge"), "charge")
    assert charge["status_code"] == "ERROR" and "no account 'carol'" in charge["status_message"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_flask_request_tree_round_trips(phoenix: Phoenix, protocol: str) -> None:
    """main -> place_orders -> CLIENT -> SERVER -> order -> check_stock -> CLIENT -> SERVER
    -> stock -> count_in_stock, all one trace, for both requests."""
    spans = exported(phoenix, "flask_service", protocol)
    assert len(spans) == EXPECTED["flask_service"], sorted(s["name"] for s in spans)
    check_code_attributes(spans, "flask_service")
    main = only([s for s in spans if s["name"] == "main"], "main")
    assert main["parent_id"] is None
    assert {s["context"]["trace_id"] for s in spans} == {main["context"]["trace_id"]}
    place = only(kids(spans, main, "place_orders"), "place_orders")
    clients = [s for s in kids(spans, place) if "code.function.name" not in s["attributes"]]
    assert len(clients) == 2
    for client, item, count in zip(clients, ["apple", "pear"], [3, 0], strict=True):
        server = only(kids(spans, client), f"server span under {client['name']}")
        assert server["attributes"].get("http.route") == "/order/<item>", server
        order = only(kids(spans, server, "order"), "order")
        assert order["attributes"]["flowtrace.arg.item"] == repr(item)
        check = only(kids(spans, order, "check_stock"), "check_stock")
        assert check["attributes"]["flowtrace.return"] == str(count)
        inner_client = only(kids(spans, check), "client span under check_stock")
        inner_server = only(kids(spans, inner_client), "server span of /stock")
        assert inner_server["attributes"].get("http.route") == "/stock/<item>", inner_server
        stock = only(kids(spans, inner_server, "stock"), "stock")
        counted = only(kids(spans, stock, "count_in_stock"), "count_in_stock")
        assert counted["attributes"]["flowtrace.arg.item"] == repr(item)
        assert counted["attributes"]["flowtrace.return"] == str(count)
        for span in (server, order, check, inner_client, inner_server, stock, counted):
            assert span["status_code"] == "UNSET", span
