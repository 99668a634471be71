"""``flowtrace-otel doctor``, run as a user runs it: a subprocess, a controlled environment and
a real OTLP receiver (HTTP/protobuf and gRPC) on local sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _programs import clean_env

from flowtrace_otel.core import choose_core
from flowtrace_otel.testing import OtlpReceiver

CONSOLE = str(Path(sys.executable).parent / "flowtrace-otel")
ROOT = Path(__file__).resolve().parent.parent
TEST_SPAN = "flowtrace-otel doctor"
# a hung doctor fails the test by this timeout; the doctor's own bound is a few seconds
HANG = 60


def doctor(env: dict[str, str], *args: str, python: list[str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    """Run ``flowtrace-otel doctor`` (or ``python -m flowtrace_otel doctor``) to completion."""
    cmd = [*python, "-m", "flowtrace_otel"] if python else [CONSOLE]
    return subprocess.run([*cmd, "doctor", *args], capture_output=True, text=True, env=env,
                          timeout=HANG, check=False, cwd=ROOT)


def checks(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The ``--json`` report's checks by name (the document must parse)."""
    return {c["name"]: c for c in json.loads(done.stdout)["checks"]}


def line(done: subprocess.CompletedProcess[str], name: str) -> str:
    """The text report's line for check ``name``."""
    found = [ln for ln in done.stdout.splitlines() if ln[6:].startswith(name)]
    assert len(found) == 1, done.stdout
    return found[0]


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_live_receiver_gets_the_test_span(protocol: str) -> None:
    with OtlpReceiver() as receiver:
        done = doctor(clean_env(**receiver.env(protocol)), "--json")
        spans = receiver.spans()
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["exit_code"] == 0
    endpoint = checks(done)["endpoint"]
    assert endpoint["verdict"] == "ok"
    assert endpoint["details"]["protocol"] == protocol
    [span] = spans  # it really arrived, once, and is the one the report names
    assert span["name"] == TEST_SPAN
    assert span["trace_id"] == endpoint["details"]["trace_id"]
    assert span["scope"] == "flowtrace_otel.doctor"
    # a local endpoint on another port than 4317/4318 is no Jaeger: no UI link
    assert "link" not in endpoint["details"]


def test_text_report_and_service_name() -> None:
    with OtlpReceiver(grpc=False) as receiver:
        env = clean_env(**receiver.env(), OTEL_SERVICE_NAME="shop")
        env.pop("FLOWTRACE_OTEL_CORE", None)  # a run on the Python core sets it: one more line
        done = doctor(env)
        spans = receiver.spans()
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    order = [ln[6:].split(":")[0].split("=")[0] for ln in lines]
    assert order == ["python", "startup hook", "FLOWTRACE_OTEL", "OTEL_EXPORTER_OTLP_ENDPOINT",
                     "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_PROTOCOL",
                     "OTEL_SERVICE_NAME", "exporter", "sampler", "endpoint", "sys.monitoring",
                     "result"]
    assert all(ln.startswith("ok    ") for ln in lines), done.stdout
    assert f"to {receiver.http_endpoint}/v1/traces, service.name 'shop'" in line(done, "exporter")
    assert "test span accepted by" in line(done, "endpoint")
    assert f"core: {choose_core({}).describe()}" in line(done, "python")  # the truth, built or not
    assert lines[-1] == f"ok    result: spans can be delivered ({receiver.http_endpoint}/v1/traces)"
    assert spans[0]["resource"]["service.name"] == "shop"
    assert "\033[" not in done.stdout  # not a terminal: no colour


def test_dead_endpoint_fails_fast_and_names_it() -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    done = doctor(clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=url))  # returns: it did not hang
    assert done.returncode == 1
    last = done.stdout.splitlines()[-1]
    assert last.startswith(f"FAIL  result: spans will not reach {url}/v1/traces")
    assert f"nothing listens on 127.0.0.1:{port} (connection refused)" in line(done, "endpoint")
    assert "-> fix: start the collector" in line(done, "endpoint")


def test_dead_grpc_endpoint() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    done = doctor(clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_EXPORTER_OTLP_PROTOCOL="grpc"),
                  "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and url in report["summary"]
    assert "connection refused" in checks(done)["endpoint"]["message"]


def test_grpc_exporter_against_an_http_receiver() -> None:
    with OtlpReceiver(grpc=False) as receiver:
        env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
                        OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
        done = doctor(env)
        assert receiver.spans() == []
    assert done.returncode == 1
    endpoint = line(done, "endpoint")
    assert endpoint.startswith("FAIL")
    assert "answers HTTP/1.1, not gRPC: it looks like an OTLP/HTTP endpoint" in endpoint
    assert "-> fix: set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in endpoint
    assert receiver.http_endpoint in done.stdout.splitlines()[-1]


def test_http_exporter_against_a_grpc_receiver() -> None:
    with OtlpReceiver() as receiver:
        env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint,
                        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        done = doctor(env, "--json")
        assert receiver.spans() == []
    assert done.returncode == 1
    endpoint = checks(done)["endpoint"]
    assert endpoint["verdict"] == "FAIL"
    assert endpoint["details"]["port_speaks"] == "HTTP/2"
    assert "looks like an OTLP/gRPC endpoint" in endpoint["message"]
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in endpoint["fix"]


def test_receiver_refusing_the_span_is_reported_with_its_status() -> None:
    with OtlpReceiver(grpc=False, status=404) as receiver:
        done = doctor(clean_env(**receiver.env()), "--json")
    assert done.returncode == 1
    endpoint = checks(done)["endpoint"]
    assert endpoint["verdict"] == "FAIL" and "404" in endpoint["message"]
    assert "URL path" in endpoint["fix"]


def test_misspelt_variables_are_pointed_out() -> None:
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPONT="http://127.0.0.1:4318",
                    FLOWTRACE_OTEL_MAX_REPER="20", OTLE_SERVICE_NAME="shop",
                    OTEL_TRACES_EXPORTER="console")  # no endpoint: nothing on the network
    done = doctor(env)
    assert done.returncode == 0, done.stdout  # warnings do not stop a span
    assert line(done, "OTEL_EXPORTER_OTLP_ENDPONT").startswith("warn")
    assert "did you mean OTEL_EXPORTER_OTLP_ENDPOINT?" in line(done, "OTEL_EXPORTER_OTLP_ENDPONT")
    assert "did you mean FLOWTRACE_OTEL_MAX_REPR?" in line(done, "FLOWTRACE_OTEL_MAX_REPER")
    assert "did you mean OTEL_SERVICE_NAME?" in line(done, "OTLE_SERVICE_NAME")
    assert "console: spans are printed on stdout" in line(done, "exporter")
    assert line(done, "endpoint").startswith("ok    endpoint: none: the console exporter")


def test_values_are_shown_as_parsed_and_bad_ones_named() -> None:
    env = clean_env(FLOWTRACE_OTEL_MAX_REPR="abc", FLOWTRACE_OTEL_INCLUDE="shop, shop.*",
                    FLOWTRACE_OTEL="maybe", OTEL_TRACES_EXPORTER="console,zipkin",
                    OTEL_EXPORTER_OTLP_HEADERS="api-key=s3cret,tenant=acme")
    done = doctor(env, "--json")
    found = checks(done)
    assert found["FLOWTRACE_OTEL_MAX_REPR"]["verdict"] == "warn"
    assert "'abc' is not an integer >= 0" in found["FLOWTRACE_OTEL_MAX_REPR"]["message"]
    assert found["FLOWTRACE_OTEL_MAX_REPR"]["details"]["parsed"] == 80
    assert found["FLOWTRACE_OTEL_INCLUDE"]["details"]["parsed"] == ["shop", "shop.*"]
    assert found["FLOWTRACE_OTEL"]["verdict"] == "warn"
    assert found["FLOWTRACE_OTEL"]["details"]["active"] is False
    assert "unknown exporter 'zipkin'" in found["OTEL_TRACES_EXPORTER"]["message"]
    assert found["OTEL_TRACES_EXPORTER"]["details"]["parsed"] == ["console"]
    assert "s3cret" not in done.stdout  # header values are credentials
    assert found["OTEL_EXPORTER_OTLP_HEADERS"]["details"]["value"] == "api-key=***,tenant=***"


def test_activation_by_flowtrace_otel() -> None:
    done = doctor(clean_env(FLOWTRACE_OTEL="1", OTEL_TRACES_EXPORTER="console"), "--json")
    found = checks(done)
    assert found["FLOWTRACE_OTEL"]["details"]["active"] is True
    assert found["startup hook"]["verdict"] == "ok"
    assert found["startup hook"]["details"]["path"].endswith("site-packages/flowtrace_otel.pth")
    # the hook started tracing in the doctor's own process: the one id in use is ours
    in_use = found["sys.monitoring"]["details"]["in_use"]
    assert list(in_use.values()) == ["flowtrace_otel"] and set(in_use) <= {"3", "4"}
    assert "held by flowtrace_otel itself" in found["sys.monitoring"]["message"]


@pytest.mark.parametrize(("variables", "failing"), [
    ({"OTEL_SDK_DISABLED": "true"}, "sdk"),
    ({"OTEL_TRACES_SAMPLER": "always_off"}, "sampler"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}, "sampler"),
])
def test_settings_that_stop_every_span(variables: dict[str, str], failing: str) -> None:
    with OtlpReceiver(grpc=False) as receiver:
        done = doctor(clean_env(**receiver.env(), **variables), "--json")
    assert done.returncode == 1
    found = checks(done)
    assert found[failing]["verdict"] == "FAIL"
    assert found["endpoint"]["verdict"] == "ok"  # the endpoint itself is fine
    assert found[failing]["fix"]


def test_exporter_none() -> None:
    done = doctor(clean_env(OTEL_TRACES_EXPORTER="none"), "--json")
    assert done.returncode == 1
    assert checks(done)["exporter"]["verdict"] == "FAIL"
    assert "be exported" in json.loads(done.stdout)["summary"]


def test_port_slips_are_pointed_out() -> None:
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4317",
                    OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    exporter = checks(doctor(env, "--json"))["exporter"]
    assert exporter["verdict"] == "warn" and "4317 is the usual OTLP/gRPC port" in exporter[
        "message"]
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}/v1/traces"
    exporter = checks(doctor(env, "--json"))["exporter"]
    assert "/v1/traces/v1/traces" in exporter["details"]["endpoint"]
    assert "drop /v1/traces" in exporter["fix"]


def test_tool_ids_taken_by_other_tools(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""\
        import sys
        sys.monitoring.use_tool_id(3, "other profiler")
        sys.monitoring.use_tool_id(4, "another tool")
    """))
    env = clean_env(PYTHONPATH=str(tmp_path), OTEL_TRACES_EXPORTER="console")
    done = doctor(env)
    assert done.returncode == 1
    tools = line(done, "sys.monitoring")
    assert tools.startswith("FAIL")
    assert "3 'other profiler', 4 'another tool'" in tools


def test_hook_missing_from_a_fresh_environment(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=HANG)
    site_packages = next(p for p in map(Path, sys.path) if p.name == "site-packages")
    env = clean_env(PYTHONPATH=os.pathsep.join([str(ROOT), str(site_packages)]),
                    OTEL_TRACES_EXPORTER="console", FLOWTRACE_OTEL="1")
    done = doctor(env, "--json", python=[str(venv / "bin" / "python")])
    hook = checks(done)["startup hook"]
    assert hook["verdict"] == "FAIL"  # asked for with FLOWTRACE_OTEL=1, and it cannot work
    assert str(venv) in hook["message"] and "FLOWTRACE_OTEL=1 does nothing here" in hook[
        "message"]
    assert done.returncode == 1


def test_without_opentelemetry_the_core_checks_still_run(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['opentelemetry'] = None\n")
    done = doctor(clean_env(PYTHONPATH=str(tmp_path)), "--json")
    found = checks(done)
    assert done.returncode == 1
    assert found["python"]["verdict"] == "ok" and found["sys.monitoring"]["verdict"] == "ok"
    assert "cannot load" in found["exporter"]["message"]


@pytest.mark.skipif(os.name != "posix", reason="needs a pseudo-terminal")
@pytest.mark.parametrize("no_color", [None, "1"])
def test_colour_only_on_a_terminal_without_no_color(no_color: str | None) -> None:
    import pty
    import select

    env = clean_env(OTEL_TRACES_EXPORTER="console")
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = no_color
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([CONSOLE, "doctor"], stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        os.close(slave)
        chunks = []
        while select.select([master], [], [], HANG)[0]:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=HANG) == 0
    finally:
        os.close(master)
    text = b"".join(chunks).decode()
    assert "python: Python" in text
    assert ("\033[32mok  \033[0m" in text) is (no_color is None)
    assert ("\033[" in text) is (no_color is None)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_receiver_that_never_answers_is_bounded_by_timeout(protocol: str) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
                        OTEL_EXPORTER_OTLP_TIMEOUT="30")  # the exporter would wait 30 s
        done = doctor(env, "--json", "--timeout", "1")  # returns: it did not hang
    assert done.returncode == 1
    endpoint = checks(done)["endpoint"]
    assert endpoint["verdict"] == "FAIL"
    assert url in json.loads(done.stdout)["summary"]
    assert "connected, but no answer within 1.0 s" in endpoint["message"]
