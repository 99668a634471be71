"""One trace, one tree: Flask under opentelemetry-instrument with FLOWTRACE_OTEL=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowtrace_otel.testing import OtlpReceiver

PROGRAM = Path(__file__).parent / "otel_programs" / "flask_chain.py"


def instrument_command() -> str:
    found = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert found, "opentelemetry-instrument is installed with the test extra"
    return found


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_request_span_view_helper_client_server_view_chain(protocol: str) -> None:
    with OtlpReceiver() as receiver:
        env = {**os.environ, "FLOWTRACE_OTEL": "1", **receiver.env(protocol),
               "OTEL_SERVICE_NAME": "shop", "OTEL_TRACES_EXPORTER": "otlp",
               "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
               "OTEL_BSP_SCHEDULE_DELAY": "100"}
        done = subprocess.run([instrument_command(), sys.executable, str(PROGRAM)], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"available": True, "item": "apple"}
        spans = receiver.wait_for_spans(8)

    by_id = {span["span_id"]: span for span in spans}

    def chain_up(span: dict[str, Any]) -> list[str]:
        names = [span["name"]]
        while span["parent_id"] in by_id:
            span = by_id[span["parent_id"]]
            names.append(span["name"])
        return names

    (lookup,) = [span for span in spans if span["name"] == "lookup"]
    assert list(reversed(chain_up(lookup))) == [
        "GET /order/<item>", "order", "check_stock", "GET", "GET /stock/<item>", "stock", "lookup"]
    kinds = [by_id[s]["kind"] for s in _ids_up(lookup, by_id)]
    assert kinds == ["SPAN_KIND_INTERNAL", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER",
                     "SPAN_KIND_CLIENT", "SPAN_KIND_INTERNAL", "SPAN_KIND_INTERNAL",
                     "SPAN_KIND_SERVER"]
    assert len({by_id[s]["trace_id"] for s in _ids_up(lookup, by_id)}) == 1
    assert lookup["attributes"]["flowtrace.arg.item"] == "'apple'"
    assert lookup["attributes"]["flowtrace.return"] == "3"
    order = next(span for span in spans if span["name"] == "order")
    assert order["attributes"]["code.function.name"] == "__main__.order"
    assert {span["resource"]["service.name"] for span in spans} == {"shop"}


def _ids_up(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[str]:
    ids = [span["span_id"]]
    while span["parent_id"] in by_id:
        span = by_id[span["parent_id"]]
        ids.append(span["span_id"])
    return ids


TEARDOWN_PROGRAM = Path(__file__).parent / "otel_programs" / "flask_teardown.py"


@pytest.mark.parametrize("threads", ["thread per request", "one-thread"])
def test_teardown_calls_stay_in_their_requests_trace(threads: str) -> None:
    """``teardown_appcontext`` runs after the request span ended: still that request's trace.

    Half the requests are for a static file: no traced call runs under their span, only
    ``close_db`` after it. On one server thread, each request must get its own teardown.
    """
    rounds = 3  # each: a view request and a static file request
    with OtlpReceiver(grpc=False) as receiver:
        env = {**os.environ, "FLOWTRACE_OTEL": "1", **receiver.env("http/protobuf"),
               "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
               "OTEL_LOGS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        done = subprocess.run([instrument_command(), sys.executable, str(TEARDOWN_PROGRAM),
                               str(rounds), threads], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(2 * rounds)
        # view: the server span, count, get_db, stamp, forget, close_db; static: 2 of them
        spans = receiver.wait_for_spans(8 * rounds)

    assert len(spans) == 8 * rounds
    by_id = {span["span_id"]: span for span in spans}
    servers = [span for span in spans if span["kind"] == "SPAN_KIND_SERVER"]
    assert len(servers) == 2 * rounds
    assert len({span["trace_id"] for span in spans}) == 2 * rounds  # one per request
    for name, count in (("close_db", 2 * rounds), ("stamp", rounds), ("forget", rounds)):
        calls = [span for span in spans if span["name"] == name]
        assert len(calls) == count
        for call in calls:
            (server,) = [s for s in servers if s["trace_id"] == call["trace_id"]]
            assert server["span_id"] in _ids_up(call, by_id)[1:], name
    for close in (span for span in spans if span["name"] == "close_db"):
        server = next(s for s in servers if s["trace_id"] == close["trace_id"])
        assert close["parent_id"] == server["span_id"]
        # it ran after the teardown_request handlers (the instrumentation's ends the request
        # span): compared with our own `forget` span, on one clock (the SDK's span times come
        # from another clock, a few milliseconds apart from ours: no cross-clock comparison)
        forgets = [s for s in spans if s["name"] == "forget" and s["trace_id"] == close["trace_id"]]
        for forget in forgets:
            assert close["start"] >= forget["end"]
