"""``FLOWTRACE_OTEL=1`` imports OpenTelemetry when it is needed, not at start-up (issue 12.8).

What is imported is checked, not how long it takes (the figures are in ``bench/startup.py``).
Each check also proves tracing is on, so none can pass because tracing silently stayed off.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _programs import PY, clean_env, mode_env, run, write

from flowtrace_otel.testing import OtlpReceiver

#: what start-up imported before (the SDK, exporters, their transports, protobuf, asyncio)
HEAVY = ("opentelemetry", "google.protobuf", "urllib3", "requests", "grpc", "asyncio",
         "multiprocessing")

#: module-level code, untraced: a traced function would start a trace (and import the SDK)
REPORT = """
    import json, sys
    names = [m.split(".")[0] for m in sys.modules] + [m for m in sys.modules]
    print(json.dumps({"when": WHEN, "tool": sys.monitoring.get_tool(3),
                      "loaded": sorted({p for p in HEAVY if p in names}),
                      "sdk": "opentelemetry.sdk.trace" in sys.modules,
                      "exporters_built": getattr(sys.modules.get(
                          "flowtrace_otel.otel.deferred_export"), "builds", None)}),
          flush=True)
"""


def reports(stdout: str) -> dict[str, Any]:
    """The program's JSON lines by their "when"."""
    return {line["when"]: line for line in map(json.loads, stdout.splitlines())}


@pytest.fixture(scope="module")
def receiver() -> Any:
    """A live OTLP receiver (http/protobuf and gRPC) for the module."""
    with OtlpReceiver() as running:
        yield running


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_empty_script_imports_no_opentelemetry(tmp_path: Path, receiver: OtlpReceiver,
                                               protocol: str) -> None:
    """After start-up, nothing of OTel, its exporters or transports is imported; tracing is on."""
    write(tmp_path, f"HEAVY = {HEAVY!r}\nWHEN = 'start'\n" + textwrap.dedent(REPORT))
    done = run([PY, "prog.py"], mode_env("env", receiver.env(protocol)), tmp_path)
    assert done.code == 0, done.stderr
    assert done.stderr == ""
    start = reports(done.stdout)["start"]
    assert start["tool"] == "flowtrace_otel"
    assert start["loaded"] == []


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_first_trace_imports_the_sdk_and_the_exporters_modules(
        tmp_path: Path, receiver: OtlpReceiver, protocol: str) -> None:
    """The first traced call imports the SDK and the exporter's modules, on the program's thread.

    Only the exporter object is left for the first export (never an import on the export
    thread: tests/test_import_thread.py says why). A batch delay longer than the program's run
    keeps the first export for the flush at exit.
    """
    write(tmp_path, f"HEAVY = {HEAVY!r}\nWHEN = 'after first call'\n" + textwrap.dedent("""
        def work(n):
            return n + 1
        work(1)
    """) + textwrap.dedent(REPORT))
    receiver.clear()
    done = run([PY, "prog.py"], mode_env("env", receiver.env(protocol),
                                         OTEL_BSP_SCHEDULE_DELAY="60000"), tmp_path)
    assert done.code == 0, done.stderr
    assert done.stderr == ""
    after = reports(done.stdout)["after first call"]
    assert after["tool"] == "flowtrace_otel" and after["sdk"]
    transport = {"grpc"} if protocol == "grpc" else {"requests", "urllib3"}
    assert transport | {"google.protobuf"} <= set(after["loaded"])
    assert after["exporters_built"] == 0
    spans = receiver.wait_for_spans(1)
    assert [s["name"] for s in spans] == ["work"]


LIBRARY_SPAN_FIRST = """
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("lib")

    def helper():
        return 1

    def handler():
        with tracer.start_as_current_span("db"):
            return helper()

    with tracer.start_as_current_span("request"):  # before any traced call
        handler()
"""


def test_otel_imported_after_start_up_still_nests(tmp_path: Path,
                                                  receiver: OtlpReceiver) -> None:
    """OTel imported by the program, a library span made before the first traced call: one tree.

    request (library) -> handler (ours) -> db (library) -> helper (ours), one trace: the
    call-aware context was installed when the program imported OpenTelemetry.
    """
    write(tmp_path, LIBRARY_SPAN_FIRST)
    receiver.clear()
    done = run([PY, "prog.py"], mode_env("env", receiver.env("http/protobuf")), tmp_path)
    assert done.code == 0, done.stderr
    spans = receiver.wait_for_spans(4)
    by_id = {s["span_id"]: s for s in spans}
    (helper,) = [s for s in spans if s["name"] == "helper"]
    chain = [helper["name"]]
    span = helper
    while span["parent_id"] in by_id:
        span = by_id[span["parent_id"]]
        chain.append(span["name"])
    assert chain == ["helper", "db", "handler", "request"]
    assert len({s["trace_id"] for s in spans}) == 1


def test_sdk_disabled_starts_nothing(tmp_path: Path) -> None:
    """``OTEL_SDK_DISABLED=true``: no tool id taken, no import watch, no SIGTERM handler."""
    write(tmp_path, "import signal, sys\nprint(sys.monitoring.get_tool(3), "
                    "[type(f).__name__ for f in sys.meta_path if 'Watch' in type(f).__name__], "
                    "signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n")
    on = run([PY, "prog.py"], mode_env("env"), tmp_path)
    off = run([PY, "prog.py"], mode_env("env", OTEL_SDK_DISABLED="true"), tmp_path)
    assert on.stdout == "flowtrace_otel ['ContextImportWatch'] False\n", on.stderr
    assert off.stdout == "None [] True\n", off.stderr


def test_start_up_twice_is_one_start(tmp_path: Path) -> None:
    """The venv's ``.pth`` runs twice: one monitor, one watch for the OTel import."""
    write(tmp_path, textwrap.dedent("""
        import sys
        from flowtrace_otel.otel import bootstrap, deferred
        bootstrap._started = False
        bootstrap.start()  # a third time, as if the flag were lost: still one of everything
        print(sys.monitoring.get_tool(3), sys.monitoring.get_tool(4),
              sum(isinstance(f, deferred.ContextImportWatch) for f in sys.meta_path))
    """))
    done = run([PY, "prog.py"], mode_env("env"), tmp_path)
    assert done.code == 0, done.stderr
    assert done.stdout == "flowtrace_otel None 1\n"


def test_plain_run_is_untouched(tmp_path: Path) -> None:
    """Without the variable: no tool id, no import watch."""
    write(tmp_path, "import sys\nprint(sys.monitoring.get_tool(3), "
                    "[type(f).__name__ for f in sys.meta_path if 'Watch' in type(f).__name__])\n")
    done = subprocess.run([PY, "prog.py"], env=clean_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.stdout == "None []\n", done.stderr
