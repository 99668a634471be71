"""The OpenTelemetry half of ``flowtrace-otel doctor``: the pipeline's choices, one real span.

:func:`build_plan` asks :mod:`flowtrace_otel.otel.pipeline` what it would build (exporters,
protocol, the real OTLP exporter with its endpoint) and the SDK what it would sample;
:func:`check_delivery` sends one test span through that exporter, bounded in time, and when it
fails says why: nothing listens, the port speaks the other protocol, or the receiver refused.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from flowtrace_otel.doctor import FAIL, OK, WARN, Check, heard_warnings
from flowtrace_otel.otel import bootstrap, pipeline

#: the name of the test span, as it shows in a backend
TEST_SPAN_NAME = "flowtrace-otel doctor"
_JAEGER_UI = "http://localhost:16686/trace/{}"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_OTLP_PORTS = {"grpc": 4317, "http/protobuf": 4318}
_SNIFF_REQUEST = b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
_HTTP2_SETTINGS = 4  # frame type of the SETTINGS frame an HTTP/2 (gRPC) server sends first


@dataclasses.dataclass
class Plan:
    """What the private pipeline would use, read from the environment once."""

    exporters: list[str]
    protocol: str
    sdk_disabled: bool
    exporter: Any
    endpoint: str | None
    address: tuple[str, int] | None
    tls: bool
    resource: Any
    service_name: str
    sampler: str
    samples_new_traces: bool
    values: dict[str, object]
    complaints: list[str]
    sdk_messages: list[str]


def sdk_variable_names() -> set[str]:
    """The ``OTEL_*`` names the installed API and SDK declare in their variable modules."""
    names: set[str] = set()
    for module_name in ("opentelemetry.environment_variables",
                        "opentelemetry.sdk.environment_variables"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        names.update(value for value in vars(module).values()
                     if isinstance(value, str) and re.fullmatch(r"OTEL_[A-Z0-9_]+", value))
    return names


class _Records(logging.Handler):
    """Keeps the messages logged at WARNING or above; wakes a waiter on an error."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.error = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if any(word in message.lower() for word in ("error", "fail", "timeout", "timed out")):
            self.error.set()


class _Captured:
    """Route a logger's records into a :class:`_Records` (not to stderr) while active."""

    def __init__(self, logger_name: str) -> None:
        self.logger = logging.getLogger(logger_name)
        self.records = _Records()

    def __enter__(self) -> _Records:
        self.propagate = self.logger.propagate
        self.logger.addHandler(self.records)
        self.logger.propagate = False
        return self.records

    def __exit__(self, *exc_info: object) -> None:
        self.logger.removeHandler(self.records)
        self.logger.propagate = self.propagate


def build_plan() -> Plan:
    """Ask the pipeline and the SDK what they would do with this environment."""
    with heard_warnings() as heard, _Captured("opentelemetry.sdk") as sdk_log:
        exporters = pipeline.exporter_names()
        protocol = pipeline._protocol()
        disabled = bootstrap.sdk_disabled()
        exporter = pipeline._otlp_exporter() if "otlp" in exporters else None
        resource = Resource.create()
        sampler = TracerProvider(resource=resource, shutdown_on_exit=False).sampler
        values: dict[str, object] = {
            "OTEL_TRACES_EXPORTER": exporters, "OTEL_SDK_DISABLED": disabled,
            "FLOWTRACE_OTEL_EXIT_TIMEOUT_MS": pipeline.exit_timeout_ms(),
        }
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if name in os.environ:
            values[name] = protocol
            break
    endpoint, address, tls = _where(exporter, protocol)
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if name in os.environ and endpoint is not None:
            values[name] = endpoint
            break
    # would a new trace be recorded? trace id 0 is taken by every ratio sampler above 0
    decision: Any = sampler.should_sample(None, 0, TEST_SPAN_NAME).decision
    service = str(resource.attributes.get("service.name", "unknown_service"))
    if "OTEL_SERVICE_NAME" in os.environ:
        values["OTEL_SERVICE_NAME"] = service
    return Plan(exporters, protocol, disabled, exporter, endpoint, address, tls, resource,
                service, sampler.get_description(), decision.is_sampled(), values,
                heard, sdk_log.messages)


def _where(exporter: Any, protocol: str) -> tuple[str | None, tuple[str, int] | None, bool]:
    """The exporter's endpoint as a URL, its (host, port) and whether it uses TLS."""
    if exporter is None:
        return None, None, False
    raw = str(getattr(exporter, "_endpoint", "") or "")
    if protocol == "grpc":  # the gRPC exporter keeps host:port and a separate TLS switch
        tls = not getattr(exporter, "_insecure", False)
        target = raw if "//" in raw else f"//{raw or 'localhost:4317'}"
        parts = urlsplit(target)
        url = f"{'https' if tls else 'http'}://{parts.netloc}"
        default_port = 443
    else:
        url = raw or "http://localhost:4318/v1/traces"
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        default_port = 443 if tls else 80
    try:
        port = parts.port or default_port
    except ValueError:
        return url, None, tls
    return url, ((parts.hostname or "localhost"), port), tls


def plan_checks(plan: Plan) -> Iterator[Check]:
    """The SDK switch, the exporter and endpoint, and the sampler, one line each."""
    if plan.sdk_disabled:
        yield Check("sdk", FAIL, "OTEL_SDK_DISABLED=true: the OpenTelemetry bridge stays off, "
                    "no span is made", "unset OTEL_SDK_DISABLED")
    if plan.sdk_messages:
        yield Check("sdk", WARN, "the SDK complained: " + "; ".join(plan.sdk_messages),
                    "fix the variables it names")
    yield _exporter_check(plan)
    named = os.environ.get("OTEL_TRACES_SAMPLER", "").strip() or "parentbased_always_on"
    arg = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    shown = f"{named} ({plan.sampler})" if arg else named
    details = {"sampler": plan.sampler}
    if plan.samples_new_traces:
        yield Check("sampler", OK, f"{shown}: new traces are recorded", "", details)
    else:
        yield Check("sampler", FAIL, f"{shown}: no new trace is recorded, so nothing is "
                    "exported", "unset OTEL_TRACES_SAMPLER (the default records every "
                    "trace) or give a ratio above 0", details)


def _exporter_check(plan: Plan) -> Check:
    """Which exporters, protocol and endpoint the pipeline would use, and port/path slips."""
    details: dict[str, Any] = {"exporters": plan.exporters, "protocol": plan.protocol,
                               "endpoint": plan.endpoint, "service_name": plan.service_name}
    if plan.exporter is None:
        if "console" in plan.exporters:
            return Check("exporter", OK, "console: spans are printed on stdout, no endpoint",
                         "", details)
        return Check("exporter", FAIL, "OTEL_TRACES_EXPORTER=none: spans are not exported",
                     "set OTEL_TRACES_EXPORTER=otlp, or unset it", details)
    text = (f"{','.join(plan.exporters)} over {plan.protocol} to {plan.endpoint}, "
            f"service.name {plan.service_name!r}")
    from flowtrace_otel.cli import wants_export  # noqa: PLC0415 - cli imports this package

    if not wants_export(False):
        text += " (the default endpoint: `flowtrace-otel run` prints the tree unless --otel)"
    slip = _slip(plan)
    if slip:
        return Check("exporter", WARN, f"{text}; {slip[0]}", slip[1], details)
    return Check("exporter", OK, text, "", details)


def _slip(plan: Plan) -> tuple[str, str] | None:
    """A common mistake visible in the configuration alone: (what, fix), or None."""
    port = plan.address[1] if plan.address else None
    path = urlsplit(plan.endpoint or "").path
    if plan.protocol == "http/protobuf" and port == 4317:
        return ("4317 is the usual OTLP/gRPC port (OTLP/HTTP is 4318)",
                "use port 4318, or set OTEL_EXPORTER_OTLP_PROTOCOL=grpc")
    if plan.protocol == "grpc" and port == 4318:
        return ("4318 is the usual OTLP/HTTP port (OTLP/gRPC is 4317)",
                "use port 4317, or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf")
    if plan.protocol == "http/protobuf" and "/v1/traces/v1/traces" in path:
        return ("the exporter adds /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT, which already "
                "ends with it", "drop /v1/traces from OTEL_EXPORTER_OTLP_ENDPOINT")
    if (plan.protocol == "http/protobuf" and os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            and not path.rstrip("/").endswith("/v1/traces")):
        return ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as is, and OTLP receivers listen "
                "on /v1/traces", "add /v1/traces to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return None


# --- the test span ----------------------------------------------------------------------------

def make_test_span(resource: Any) -> ReadableSpan:
    """A finished, sampled span with the program's resource, as the bridge would export."""
    ids = RandomIdGenerator()
    context = SpanContext(trace_id=ids.generate_trace_id(), span_id=ids.generate_span_id(),
                          is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    now = time.time_ns()
    return ReadableSpan(name=TEST_SPAN_NAME, context=context, resource=resource,
                        attributes={"flowtrace.doctor": True}, kind=SpanKind.INTERNAL,
                        start_time=now, end_time=now + 1_000,
                        instrumentation_scope=InstrumentationScope("flowtrace_otel.doctor"))


@dataclasses.dataclass
class _Outcome:
    """What happened to the test span within the time allowed."""

    result: Any  # SpanExportResult, an exception, or None when nothing came back in time
    messages: list[str]
    seconds: float


def _export_once(exporter: Any, span: ReadableSpan, timeout: float) -> _Outcome:
    """Export ``span``; return at its result, at the first error logged, or after ``timeout``.

    The exporter retries transient errors until its own timeout: the first error is the
    answer here, so the retries are cut short by shutting the exporter down.
    """
    capture = _Captured("opentelemetry.exporter")
    records = capture.__enter__()
    outcome: list[Any] = []
    lock = threading.Lock()
    done = threading.Event()
    left_running = threading.Event()

    def send() -> None:
        try:
            outcome.append(exporter.export([span]))
        except Exception as error:  # reported, never raised
            outcome.append(error)
        finally:
            records.error.set()
            with lock:
                done.set()
                if left_running.is_set():  # the report is out: put the logger back now
                    capture.__exit__()

    started = time.perf_counter()
    worker = threading.Thread(target=send, name="flowtrace-otel-doctor-export", daemon=True)
    worker.start()
    records.error.wait(timeout)
    seconds = time.perf_counter() - started
    with lock:  # what happened by now; the shutdown below must not change the verdict
        finished = done.is_set()
        result = outcome[0] if finished and outcome else None
        messages = list(records.messages)
        if not finished:
            left_running.set()
    if finished:
        capture.__exit__()
        exporter.shutdown()
    else:  # cut the retries short; the daemon thread ends on its own
        threading.Thread(target=exporter.shutdown, daemon=True).start()
    return _Outcome(result, messages, seconds)


def check_delivery(plan: Plan, timeout: float) -> Check:
    """Send one test span to the endpoint; say how long it took, or why it did not arrive."""
    if plan.exporter is None:
        if "console" in plan.exporters:
            return Check("endpoint", OK, "none: the console exporter prints spans on stdout")
        return Check("endpoint", FAIL, "no OTLP exporter configured: nothing to send to",
                     "set OTEL_TRACES_EXPORTER=otlp, or unset it")
    endpoint = plan.endpoint or "?"
    details: dict[str, Any] = {"endpoint": endpoint, "protocol": plan.protocol}
    proxied = _proxied(plan)
    if plan.address and not proxied:
        problem = _cannot_connect(plan.address, timeout)
        if problem:
            details["problem"] = problem
            return Check("endpoint", FAIL, f"{endpoint}: {problem}", _fix_unreachable(plan),
                         details)
    span = make_test_span(plan.resource)
    trace_id = format(span.context.trace_id, "032x")
    outcome = _export_once(plan.exporter, span, timeout)
    details.update(trace_id=trace_id, milliseconds=round(outcome.seconds * 1000, 1))
    if outcome.result is SpanExportResult.SUCCESS:
        text = (f"test span accepted by {endpoint} in {outcome.seconds * 1000:.0f} ms, "
                f"trace {trace_id}")
        if plan.address and plan.address[0] in _LOCAL_HOSTS and plan.address[1] in (4317, 4318):
            details["link"] = _JAEGER_UI.format(trace_id)
            text += f" (in a local Jaeger: {details['link']})"
        return Check("endpoint", OK, text, "", details)
    reason = _reason(outcome)
    details["reason"] = reason
    if outcome.result is None and not outcome.messages:  # connected, then silence
        details["problem"] = f"the test span got {reason}"
        return Check("endpoint", FAIL, f"{endpoint}: connected, but {reason}",
                     "a hung or overloaded receiver, or not an OTLP one: check its logs "
                     "(--timeout waits longer)", details)
    spoken = None if (proxied or plan.tls or not plan.address) else _sniff(plan.address)
    details["port_speaks"] = spoken
    mismatch = _mismatch(plan, spoken)
    if mismatch:
        details["problem"] = mismatch[0]
        said = reason if len(reason) <= 100 else reason[:99] + "…"
        return Check("endpoint", FAIL, f"{endpoint}: {mismatch[0]} (exporter: {said})",
                     mismatch[1], details)
    details["problem"] = f"the test span was not accepted: {reason}"
    return Check("endpoint", FAIL, f"{endpoint} did not accept the test span: {reason}",
                 _fix_refused(reason), details)


def _proxied(plan: Plan) -> bool:
    """Whether an HTTP(S) proxy from the environment stands between us and the endpoint."""
    if not plan.address:
        return False
    scheme = "https" if plan.tls else "http"
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(
        plan.address[0])


def _cannot_connect(address: tuple[str, int], timeout: float) -> str | None:
    """Why a TCP connection to ``address`` fails, or None when it opens."""
    host, port = address
    try:
        with socket.create_connection(address, timeout=min(timeout, 3.0)):
            return None
    except socket.gaierror as error:
        return f"the host name {host!r} does not resolve ({error.strerror})"
    except ConnectionRefusedError:
        return f"nothing listens on {host}:{port} (connection refused)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {min(timeout, 3.0):g} s"
    except OSError as error:
        return f"cannot connect to {host}:{port} ({error.strerror or error})"


def _fix_unreachable(plan: Plan) -> str:
    """What to do when nothing answers at the endpoint."""
    port = _OTLP_PORTS[plan.protocol] if plan.protocol in _OTLP_PORTS else 4318
    return (f"start the collector or Jaeger (OTLP {plan.protocol} listens on :{port}), or "
            "point OTEL_EXPORTER_OTLP_ENDPOINT at where it runs")


def _sniff(address: tuple[str, int]) -> str | None:
    """What a plaintext port speaks: "HTTP/1.1" (OTLP/HTTP), "HTTP/2" (gRPC) or None."""
    try:
        with socket.create_connection(address, timeout=2.0) as conn:
            conn.sendall(_SNIFF_REQUEST % address[0].encode("idna"))
            reply = conn.recv(64)
    except OSError:
        return None
    if reply.startswith(b"HTTP/"):
        return "HTTP/1.1"
    if len(reply) >= 9 and reply[3] == _HTTP2_SETTINGS:
        return "HTTP/2"
    return None


def _mismatch(plan: Plan, spoken: str | None) -> tuple[str, str] | None:
    """(what, fix) when the port speaks the other OTLP transport than the exporter."""
    if plan.protocol == "grpc" and spoken == "HTTP/1.1":
        return ("the port answers HTTP/1.1, not gRPC: it looks like an OTLP/HTTP endpoint",
                "set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, or use the gRPC port "
                "(usually 4317)")
    if plan.protocol == "http/protobuf" and spoken == "HTTP/2":
        return ("the port answers HTTP/2 only: it looks like an OTLP/gRPC endpoint",
                "set OTEL_EXPORTER_OTLP_PROTOCOL=grpc, or use the OTLP/HTTP port (usually 4318)")
    return None


def _reason(outcome: _Outcome) -> str:
    """The exporter's own account of the failure, shortened to one printable line."""
    if outcome.result is None and not outcome.messages:
        return f"no answer within {outcome.seconds:.1f} s"
    if isinstance(outcome.result, Exception):
        text = f"{type(outcome.result).__name__}: {outcome.result}"
    else:
        text = outcome.messages[0] if outcome.messages else "export failed"
    text = "".join(ch if ch.isprintable() else "." for ch in text)
    return text if len(text) <= 240 else text[:239] + "…"


def _fix_refused(reason: str) -> str:
    """What usually fixes a receiver's refusal, read from its status code when there is one."""
    code = re.search(r"\b(?:code|status)\D{0,4}(\d{3})\b", reason)
    status = int(code.group(1)) if code else None
    if status == 404:
        return ("the URL path is wrong: OTEL_EXPORTER_OTLP_ENDPOINT takes the base URL (the "
                "exporter adds /v1/traces), OTEL_EXPORTER_OTLP_TRACES_ENDPOINT the full URL")
    if status in (401, 403) or "UNAUTHENTICATED" in reason or "PERMISSION_DENIED" in reason:
        return "the receiver wants credentials: set OTEL_EXPORTER_OTLP_HEADERS"
    if status == 415:
        return "the receiver refuses protobuf over HTTP: check it accepts OTLP/HTTP protobuf"
    if "UNIMPLEMENTED" in reason:
        return "the gRPC server has no OTLP trace service: check the port (OTLP/gRPC is 4317)"
    if "SSL" in reason or "certificate" in reason.lower():
        return ("TLS failed: use http:// for a plaintext receiver, or set "
                "OTEL_EXPORTER_OTLP_CERTIFICATE")
    return "check the receiver's logs and the endpoint URL"
