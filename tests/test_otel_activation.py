"""FLOWTRACE_OTEL=1 in real processes, exporting to a real OTLP receiver over a socket."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowtrace_otel.testing import OtlpReceiver

PROGRAMS = Path(__file__).parent / "otel_programs"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def run(args: list[str], receiver: OtlpReceiver, protocol: str = "http/protobuf",
        cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a program with FLOWTRACE_OTEL=1 pointed at ``receiver``."""
    full_env = {**os.environ, "FLOWTRACE_OTEL": "1", **receiver.env(protocol), **env}
    full_env.pop("PYTHONPATH", None)
    return subprocess.run(args, env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def named(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in spans}


def parent_of(span: dict[str, Any], spans: list[dict[str, Any]]) -> str | None:
    for other in spans:
        if other["span_id"] == span["parent_id"]:
            return str(other["name"])
    return None


SCRIPT = textwrap.dedent('''
    def price(item, qty):
        return {"apple": 0.5}[item] * qty

    def checkout(cart):
        total = 0.0
        for item, qty in cart.items():
            try:
                total += price(item, qty)
            except KeyError:
                pass
        return total

    def main():
        print("total", checkout({"apple": 2, "kiwi": 1}))

    if __name__ == "__main__":
        main()
''')


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_script_spans_reach_the_receiver(tmp_path: Path, receiver: OtlpReceiver,
                                         protocol: str) -> None:
    script = tmp_path / "shop.py"
    script.write_text(SCRIPT)
    done = run([sys.executable, str(script)], receiver, protocol, cwd=tmp_path,
               OTEL_SERVICE_NAME="shop")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "total 1.0\n"
    assert done.stderr == ""
    spans = receiver.wait_for_spans(4)
    assert sorted(s["name"] for s in spans) == ["checkout", "main", "price", "price"]
    assert {parent_of(s, spans) for s in spans if s["name"] == "price"} == {"checkout"}
    assert parent_of(named(spans)["checkout"], spans) == "main"
    assert named(spans)["main"]["parent_id"] is None
    assert {s["resource"]["service.name"] for s in spans} == {"shop"}
    assert len({s["trace_id"] for s in spans}) == 1
    failed = [s for s in spans if s["status"] == "STATUS_CODE_ERROR"]
    assert [s["attributes"]["flowtrace.arg.item"] for s in failed] == ["'kiwi'"]
    assert named(spans)["checkout"]["status"] == "STATUS_CODE_UNSET"


def test_python_dash_m_and_unset_variable(tmp_path: Path, receiver: OtlpReceiver) -> None:
    (tmp_path / "shop.py").write_text(SCRIPT)
    done = run([sys.executable, "-m", "shop"], receiver, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(receiver.wait_for_spans(4)) == 4
    receiver.clear()
    quiet = run([sys.executable, "-c", "import sys; print(sorted(m for m in sys.modules "
                 "if m.startswith(('flowtrace', 'opentelemetry'))))"], receiver,
                FLOWTRACE_OTEL="")
    assert quiet.stdout.strip() == "[]"


def test_bad_flag_value_warns_once_and_stays_off(tmp_path: Path, receiver: OtlpReceiver) -> None:
    (tmp_path / "shop.py").write_text(SCRIPT)
    done = run([sys.executable, "shop.py"], receiver, cwd=tmp_path, FLOWTRACE_OTEL="maybe")
    assert done.returncode == 0
    assert done.stdout == "total 1.0\n"
    assert done.stderr.count("FLOWTRACE_OTEL='maybe'") == 1
    assert receiver.requests == 0


def test_child_processes_continue_the_trace(receiver: OtlpReceiver) -> None:
    done = run([sys.executable, str(PROGRAMS / "parent_child.py")], receiver)
    assert done.returncode == 0, done.stderr
    spans = receiver.wait_for_spans(7)
    assert sorted(s["name"] for s in spans) == [
        "child_work", "child_work", "main", "mp_target", "spawn_child", "spawn_child_with_env",
        "spawn_process"]
    trace_id = named(spans)["main"]["trace_id"]
    children = {parent_of(s, spans): s for s in spans if s["name"] == "child_work"}
    assert children["spawn_child"]["trace_id"] == trace_id
    assert parent_of(named(spans)["mp_target"], spans) == "spawn_process"
    assert named(spans)["mp_target"]["trace_id"] == trace_id
    if sys.version_info >= (3, 13):  # an explicit env= gets TRACEPARENT added to a copy
        assert children["spawn_child_with_env"]["trace_id"] == trace_id
    else:  # 3.12 cannot change the env= argument: that child starts its own trace
        assert children[None]["trace_id"] != trace_id


def test_application_provider_is_used_not_replaced(tmp_path: Path,
                                                   receiver: OtlpReceiver) -> None:
    app = tmp_path / "own_provider.py"
    app.write_text(textwrap.dedent('''
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "own-app"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)

        def work(n):
            with trace.get_tracer("app").start_as_current_span("manual"):
                return inner(n)

        def inner(n):
            return n + 1

        print(work(1))
    '''))
    done = run([sys.executable, str(app)], receiver, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2\n"
    assert "Overriding" not in done.stderr
    spans = receiver.wait_for_spans(3)
    assert {s["resource"]["service.name"] for s in spans} == {"own-app"}
    assert parent_of(named(spans)["manual"], spans) == "work"
    assert parent_of(named(spans)["inner"], spans) == "manual"


def test_console_and_none_exporters(tmp_path: Path, receiver: OtlpReceiver) -> None:
    (tmp_path / "shop.py").write_text(SCRIPT)
    console = run([sys.executable, "shop.py"], receiver, cwd=tmp_path,
                  OTEL_TRACES_EXPORTER="console")
    assert console.returncode == 0
    assert '"name": "checkout"' in console.stdout
    none = run([sys.executable, "shop.py"], receiver, cwd=tmp_path, OTEL_TRACES_EXPORTER="none")
    assert none.stdout == "total 1.0\n"
    disabled = run([sys.executable, "shop.py"], receiver, cwd=tmp_path, OTEL_SDK_DISABLED="true")
    assert disabled.stdout == "total 1.0\n"
    assert receiver.requests == 0


def test_sampler_from_environment_is_honoured(tmp_path: Path, receiver: OtlpReceiver) -> None:
    (tmp_path / "shop.py").write_text(SCRIPT)
    done = run([sys.executable, "shop.py"], receiver, cwd=tmp_path,
               OTEL_TRACES_SAMPLER="always_off")
    assert done.returncode == 0
    assert receiver.requests == 0


def test_cli_exports_when_an_endpoint_is_set_and_prints_the_trace(
        tmp_path: Path, receiver: OtlpReceiver) -> None:
    (tmp_path / "shop.py").write_text(SCRIPT)
    cli = Path(sys.executable).parent / "flowtrace-otel"
    env = {**os.environ, **receiver.env("http/protobuf")}
    env.pop("FLOWTRACE_OTEL", None)
    done = subprocess.run([str(cli), "run", "shop.py"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "total 1.0\n"
    spans = receiver.wait_for_spans(4)
    (trace_id,) = {span["trace_id"] for span in spans}
    assert f"flowtrace-otel: trace {trace_id}  http://localhost:16686/trace/{trace_id}" in (
        done.stderr)


def test_instrument_in_code_stops_and_flushes_at_exit(tmp_path: Path,
                                                      receiver: OtlpReceiver) -> None:
    """A program that never calls uninstrument(): its spans still arrive, its exit is untraced."""
    app = tmp_path / "in_code.py"
    app.write_text(textwrap.dedent('''
        import atexit
        from flowtrace_otel import otel

        def later_exit_hook():  # registered first, so it runs after the tracer's own hook
            print("traced at exit:", otel.is_instrumented())

        atexit.register(later_exit_hook)
        otel.instrument()

        def work(n):
            return n * 2

        work(21)
    '''))
    done = run([sys.executable, str(app)], receiver, cwd=tmp_path, FLOWTRACE_OTEL="")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "traced at exit: False\n"
    assert [s["name"] for s in receiver.wait_for_spans(1)] == ["work"]
