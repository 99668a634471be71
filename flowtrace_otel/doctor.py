"""``flowtrace-otel doctor``: check, in order, what stands between a program and its spans.

Each check is one line with a verdict (``ok``, ``warn``, ``FAIL``) and, when something is wrong,
the fix. The checks that need OpenTelemetry (exporter, sampler, test span) live in
:mod:`flowtrace_otel.otel.doctor`, imported only when they run: this module is part of the
stdlib-only core. The exit code is 0 when a span can be delivered, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import io
import json
import os
import site
import sys
import sysconfig
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from flowtrace_otel import _options

OK, WARN, FAIL = "ok", "warn", "FAIL"
_COLOURS = {OK: "\x1b[32m", WARN: "\x1b[33m", FAIL: "\x1b[1;31m"}

#: Every ``OTEL_*`` variable read by the OpenTelemetry SDK, the OTLP exporters and
#: ``opentelemetry-instrument`` (from their sources, 1.30 to 1.45; the SDK's own declared names
#: are added at run time by :func:`flowtrace_otel.otel.doctor.sdk_variable_names`).
OTEL_VARIABLES = frozenset({
    "OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_BLRP_EXPORT_TIMEOUT", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "OTEL_BLRP_MAX_QUEUE_SIZE",
    "OTEL_BLRP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_CONFIG_FILE", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS",
    *(f"OTEL_EXPORTER_OTLP{signal}_{setting}"
      for signal in ("", "_TRACES", "_METRICS", "_LOGS")
      for setting in ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY", "COMPRESSION",
                      "ENDPOINT", "HEADERS", "INSECURE", "PROTOCOL", "TIMEOUT")),
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_EXPORTER_PROMETHEUS_HOST", "OTEL_EXPORTER_PROMETHEUS_PORT",
    "OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_ZIPKIN_TIMEOUT",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_LOGS_EXPORTER", "OTEL_LOG_LEVEL",
    "OTEL_METRICS_EXEMPLAR_FILTER", "OTEL_METRICS_EXPORTER", "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT", "OTEL_PROPAGATORS",
    "OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH", "OTEL_PYTHON_CONFIGURATOR",
    "OTEL_PYTHON_CONTEXT", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "OTEL_PYTHON_DISTRO",
    *(f"OTEL_PYTHON_EXPORTER_OTLP_{transport}{signal}_CREDENTIAL_PROVIDER"
      for transport in ("GRPC", "HTTP") for signal in ("", "_TRACES", "_METRICS", "_LOGS")),
    "OTEL_PYTHON_EXPORTER_OTLP_GRPC_RETRYABLE_ERROR_CODES",
    "OTEL_PYTHON_EXCLUDED_URLS", "OTEL_PYTHON_ID_GENERATOR",
    "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS", "OTEL_PYTHON_LOGGER_CONFIGURATOR",
    "OTEL_PYTHON_LOGGER_PROVIDER", "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED",
    "OTEL_PYTHON_LOG_CORRELATION", "OTEL_PYTHON_LOG_FORMAT", "OTEL_PYTHON_LOG_LEVEL",
    "OTEL_PYTHON_METER_CONFIGURATOR", "OTEL_PYTHON_METER_PROVIDER",
    "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "OTEL_PYTHON_TRACER_CONFIGURATOR",
    "OTEL_PYTHON_TRACER_PROVIDER", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED",
    "OTEL_SEMCONV_STABILITY_OPT_IN", "OTEL_SERVICE_NAME", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT", "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
})

#: ``FLOWTRACE_OTEL*`` names read outside the options table (:data:`_options.ENV_VARS`).
#: ``FLOWTRACE_OTEL_CORE`` is read by :mod:`flowtrace_otel.core` (and reported by this doctor).
_OTHER_FLOWTRACE_VARIABLES = ("FLOWTRACE_OTEL", "FLOWTRACE_OTEL_EXIT_TIMEOUT_MS",
                              "FLOWTRACE_OTEL_FAST_EXPORT", "FLOWTRACE_OTEL_DEBUG",
                              "FLOWTRACE_OTEL_CORE")
_PREFIXES = ("OTEL_", "FLOWTRACE_OTEL")
_SECRET_PARTS = ("HEADERS",)  # values of these are never printed, only their keys


@dataclasses.dataclass
class Check:
    """One line of the report: what was checked, the verdict, and the fix when it is not ok."""

    name: str
    verdict: str
    message: str
    fix: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


# --- interpreter and start-up hook -----------------------------------------------------------

def check_python() -> Check:
    """The interpreter and which tracer core runs."""
    version = ".".join(map(str, sys.version_info[:3]))
    where = f"Python {version} ({sys.implementation.name}) at {sys.executable}"
    details = {"python": version, "implementation": sys.implementation.name,
               "executable": sys.executable}
    if sys.version_info < (3, 12) or not hasattr(sys, "monitoring"):
        return Check("python", FAIL, f"{where}: no sys.monitoring",
                     "run with CPython 3.12 or newer", details)
    core, verdict, fix = _core()
    details["core"] = core
    return Check("python", verdict, f"{where}, core: {core}", fix, details)


def _core() -> tuple[str, str, str]:
    """Which core runs and what the C extension does, honouring ``FLOWTRACE_OTEL_CORE``."""
    from flowtrace_otel import core  # noqa: PLC0415 - only when the doctor runs

    asked = os.environ.get(core.CORE_ENV, "").strip()
    try:
        choice = core.choose_core()
    except core.CoreUnavailable as exc:
        return (f"python ({exc})", WARN,
                f"unset {core.CORE_ENV}, or reinstall with a C compiler (docs/native.md)")
    if asked and choice.requested is None:
        return (f"{choice.describe()}; {core.CORE_ENV}={asked!r} is not native or python", WARN,
                f"set {core.CORE_ENV} to native or python, or unset it")
    return choice.describe(), OK, ""


def site_dirs() -> list[str]:
    """This interpreter's site-packages folders (global, user and the install scheme's)."""
    found: list[str] = []
    candidates = list(getattr(site, "getsitepackages", list)())
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    candidates += [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    for folder in candidates:
        if folder and os.path.realpath(folder) not in map(os.path.realpath, found):
            found.append(folder)
    return found


def check_startup_hook(wanted: bool) -> Check:
    """``flowtrace_otel.pth`` in this interpreter's site-packages, as shipped."""
    shipped = Path(__file__).resolve().parent / "startup" / "flowtrace_otel.pth"
    hooks = [Path(d) / "flowtrace_otel.pth" for d in site_dirs()
             if (Path(d) / "flowtrace_otel.pth").is_file()]
    if not hooks:
        return Check(
            "startup hook", FAIL if wanted else WARN,
            "flowtrace_otel.pth is not in this interpreter's site-packages "
            f"({', '.join(site_dirs())}): FLOWTRACE_OTEL=1 does nothing here",
            f"reinstall in this environment: {Path(sys.executable).name} -m pip install "
            "flowtrace-otel (`flowtrace-otel run` works without the hook)")
    hook = hooks[0]
    details = {"path": str(hook)}
    if shipped.is_file() and hook.read_bytes().strip() != shipped.read_bytes().strip():
        return Check("startup hook", WARN, f"{hook} differs from this version's hook",
                     "reinstall flowtrace-otel in this environment", details)
    if sys.flags.no_site:
        return Check("startup hook", FAIL if wanted else WARN,
                     f"{hook} is installed, but python -S skips .pth files",
                     "run python without -S", details)
    return Check("startup hook", OK, f"installed: {hook}", "", details)


@contextlib.contextmanager
def heard_warnings() -> Iterator[list[str]]:
    """Collect the settings' complaints as text, even those already made once in this process.

    The settings complain once per variable (``_options._warned`` remembers), as a warning or
    as a line on stderr; start-up may have used that once already, so the record of what was
    said is emptied here and restored afterwards, and both channels are listened to.
    """
    said: set[str] | None = getattr(_options, "_warned", None)
    saved = set(said) if said is not None else set()
    heard: list[str] = []
    lines = io.StringIO()
    try:
        if said is not None:
            said.clear()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(lines):
            warnings.simplefilter("always")
            yield heard
        heard.extend(str(w.message) for w in caught)
        heard.extend(line.removeprefix("flowtrace_otel: ")
                     for line in lines.getvalue().splitlines() if line.strip())
    finally:
        if said is not None:
            said.clear()
            said.update(saved)


def flowtrace_otel_wanted() -> tuple[bool, str | None]:
    """Whether ``FLOWTRACE_OTEL`` turns tracing on, by the package's rule, and its complaint."""
    raw = os.environ.get("FLOWTRACE_OTEL")
    if raw is None:
        return False, None
    with heard_warnings() as heard:
        wanted = _options.parse_bool("FLOWTRACE_OTEL", raw, False)
    return wanted, (heard[0] if heard else None)


def check_activation() -> Check:
    """What ``FLOWTRACE_OTEL`` does at start-up."""
    raw = os.environ.get("FLOWTRACE_OTEL")
    wanted, problem = flowtrace_otel_wanted()
    details = {"value": raw, "active": wanted}
    if problem:
        said = _complaint_for("FLOWTRACE_OTEL", raw or "", [problem]) or problem
        return Check("FLOWTRACE_OTEL", WARN, f"{raw!r} {said}: programs start untraced",
                     "set FLOWTRACE_OTEL=1 to trace from start-up, or unset it", details)
    if wanted:
        return Check("FLOWTRACE_OTEL", OK, f"{raw!r}: every program of this interpreter "
                     "starts traced and exports its spans", "", details)
    shown = "unset" if raw is None else f"{raw!r} (off)"
    return Check("FLOWTRACE_OTEL", OK, f"{shown}: programs start untraced; "
                 "`flowtrace-otel run` or FLOWTRACE_OTEL=1 traces them", "", details)


# --- variables --------------------------------------------------------------------------------

def known_flowtrace_variables() -> set[str]:
    """Every ``FLOWTRACE_OTEL*`` name the package reads."""
    return set(_options.ENV_VARS) | set(_OTHER_FLOWTRACE_VARIABLES)


def closest(name: str, known: set[str]) -> str | None:
    """The known variable name ``name`` most likely misspells, if any is close."""
    matches = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.8)
    return matches[0] if matches else None


def variables_to_check(env: Mapping[str, str], known: set[str]) -> list[str]:
    """Names to report: ours and OTel's by prefix, plus others that look like a misspelt one."""
    names = []
    for name in env:
        if name.upper().startswith(_PREFIXES):
            names.append(name)
        elif name not in known and len(name) > 8 and difflib.get_close_matches(
                name.upper(), sorted(known), n=1, cutoff=0.9):
            names.append(name)
    return sorted(names)


def shown_value(name: str, raw: str) -> str:
    """The value as printed: header values (credentials) are masked, their keys kept."""
    if any(part in name for part in _SECRET_PARTS):
        keys = [item.split("=", 1)[0].strip() for item in raw.split(",") if item.strip()]
        return ",".join(f"{key}=***" for key in keys)
    return raw


def flowtrace_values(env: Mapping[str, str]) -> tuple[dict[str, object], list[str]]:
    """The options table's variables as the tracer parses them, and its complaints."""
    with heard_warnings() as heard:
        options = _options.options_from_env(env)
    values: dict[str, object] = {}
    for var, field in _options.ENV_VARS.items():
        if var in env:
            values[var] = getattr(options, field) if isinstance(field, str) else env[var]
    return values, heard


def _complaint_for(name: str, raw: str, complaints: list[str]) -> str | None:
    """The first complaint about variable ``name`` (it starts with the name), without it."""
    for text in complaints:
        if text.startswith(name) and text[len(name):len(name) + 1] in ("=", ":", " "):
            for said in (f"{name}={raw!r}", f"{name}={raw}", name):
                if text.startswith(said):
                    return text[len(said):].lstrip(" :")
    return None


def check_variables(env: Mapping[str, str], known_otel: set[str], values: Mapping[str, object],
                    complaints: list[str]) -> Iterator[Check]:
    """One line per ``OTEL_*``/``FLOWTRACE_OTEL_*`` variable set, misspelt names pointed out."""
    known = known_otel | known_flowtrace_variables()
    names = [n for n in variables_to_check(env, known) if n != "FLOWTRACE_OTEL"]
    if not names:
        yield Check("variables", OK, "no OTEL_* or FLOWTRACE_OTEL_* variable set: defaults apply")
        return
    for name in names:
        raw = env[name]
        shown = shown_value(name, raw)
        details: dict[str, Any] = {"value": shown}
        if name not in known:
            guess = closest(name, known)
            details["did_you_mean"] = guess
            text = (f"={shown!r} is not read by flowtrace-otel, the OpenTelemetry SDK or the "
                    "OTLP exporters")
            if guess:
                yield Check(name, WARN, f"{text}; did you mean {guess}?",
                            f"rename it to {guess}", details)
            else:
                yield Check(name, WARN, text, "check the name", details)
            continue
        complaint = _complaint_for(name, raw, complaints)
        parsed = values.get(name, raw) if shown == raw else shown  # secrets stay masked
        details["parsed"] = list(parsed) if isinstance(parsed, (list, tuple)) else parsed
        text = f"={shown!r}" if parsed in (raw, shown) else f"={shown!r} -> {parsed!r}"
        shadow = _shadowed_by(name, env)
        if shadow:
            text += f" (not used for traces: {shadow} is set)"
        if complaint:
            yield Check(name, WARN, f"={shown!r} {complaint}", "fix the value", details)
        else:
            yield Check(name, OK, text, "", details)


def _shadowed_by(name: str, env: Mapping[str, str]) -> str | None:
    """The traces-specific variable that overrides the general ``name``, when both are set."""
    prefix = "OTEL_EXPORTER_OTLP_"
    if name.startswith(prefix) and not name[len(prefix):].startswith(
            ("TRACES_", "METRICS_", "LOGS_")):
        specific = f"{prefix}TRACES_{name[len(prefix):]}"
        if specific in env:
            return specific
    return None


# --- sys.monitoring ---------------------------------------------------------------------------

def check_tool_ids() -> Check:
    """Which ``sys.monitoring`` tool ids are taken in a fresh interpreter, and by whom."""
    from flowtrace_otel.monitoring import FREE_TOOL_IDS, TOOL_NAME  # noqa: PLC0415

    monitoring: Any = getattr(sys, "monitoring", None)
    if monitoring is None:
        return Check("sys.monitoring", FAIL, "not available in this interpreter",
                     "run with CPython 3.12 or newer")
    used = {i: monitoring.get_tool(i) for i in range(6) if monitoring.get_tool(i) is not None}
    details = {"in_use": {str(i): name for i, name in used.items()}}
    in_use = ", ".join(f"{i} {name!r}" for i, name in used.items()) or "none"
    ours = [i for i in FREE_TOOL_IDS if used.get(i) == TOOL_NAME]
    free = [i for i in FREE_TOOL_IDS if i not in used]
    if ours:
        return Check("sys.monitoring", OK, f"id {ours[0]} held by flowtrace_otel itself "
                     f"(FLOWTRACE_OTEL started it); ids in use: {in_use}", "", details)
    if not free:
        return Check("sys.monitoring", FAIL, f"ids 3 and 4 are both taken at start-up "
                     f"(ids in use: {in_use}): tracing cannot start",
                     "remove the tool that a .pth or sitecustomize starts", details)
    taken = [i for i in FREE_TOOL_IDS if i in used]
    if taken:
        return Check("sys.monitoring", WARN, f"id {taken[0]} taken ({used[taken[0]]!r}), "
                     f"flowtrace_otel will use {free[0]}; ids in use: {in_use}",
                     "nothing to do unless another tool also needs one", details)
    return Check("sys.monitoring", OK, f"ids 3 and 4 free; ids in use: {in_use}", "", details)


# --- running the checks -----------------------------------------------------------------------

def run_checks(timeout: float) -> Iterator[Check]:
    """Every check, in the documented order (slow ones last but one)."""
    env = dict(os.environ)
    yield check_python()
    wanted, _ = flowtrace_otel_wanted()
    yield check_startup_hook(wanted)
    yield check_activation()
    values, complaints = flowtrace_values(env)
    try:
        from flowtrace_otel.otel import doctor as otel_doctor  # noqa: PLC0415 - optional part
        plan = otel_doctor.build_plan()
    except Exception as error:  # no OpenTelemetry, or it fails to start: say so, go on
        yield from check_variables(env, set(OTEL_VARIABLES), values, complaints)
        yield Check("exporter", FAIL, f"the OpenTelemetry SDK or exporter cannot load: "
                    f"{type(error).__name__}: {error}",
                    "reinstall flowtrace-otel with its dependencies (opentelemetry-sdk, "
                    "opentelemetry-exporter-otlp)")
        yield check_tool_ids()
        return
    values.update(plan.values)
    yield from check_variables(env, set(OTEL_VARIABLES) | otel_doctor.sdk_variable_names(),
                               values, complaints + plan.complaints)
    yield from otel_doctor.plan_checks(plan)
    yield otel_doctor.check_delivery(plan, timeout)
    yield check_tool_ids()


def _colour(stream: TextIO) -> bool:
    """Colour on a terminal, never when ``NO_COLOR`` is set (to a non-empty value)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_check(check: Check, colour: bool) -> str:
    """One report line: verdict, name, what was found, and the fix when there is one."""
    verdict = f"{check.verdict:<4}"
    if colour:
        verdict = f"{_COLOURS[check.verdict]}{verdict}\x1b[0m"
    separator = "" if check.message.startswith("=") else ": "
    line = f"{verdict}  {check.name}{separator}{check.message}"
    return f"{line}  -> fix: {check.fix}" if check.fix and check.verdict != OK else line


def summary(checks: list[Check]) -> tuple[int, str]:
    """The exit code and the last line: can a span be delivered, and where to."""
    endpoint = next((c.details.get("endpoint") for c in checks if c.details.get("endpoint")),
                    None)
    failed = [c for c in checks if c.verdict == FAIL]
    if not failed:
        return 0, f"spans can be delivered ({endpoint or 'no endpoint: console exporter'})"
    first = failed[0]
    problem = first.details.get("problem") or f"{first.name}: {first.message}"
    where = f"reach {endpoint}" if endpoint else "be exported"
    return 1, (f"spans will not {where}: {problem}"
               + (f" (and {len(failed) - 1} more problem(s) above)" if len(failed) > 1 else ""))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``doctor`` subcommand's options."""
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="longest wait for the test span (default 5)")


def register(subparsers: Any) -> None:
    """Add ``flowtrace-otel doctor`` to the command line's subcommands."""
    parser = subparsers.add_parser(
        "doctor", help="check the set-up: hook, variables, exporter, endpoint (sends 1 span)",
        description="Check, in order, what decides whether spans reach your backend: Python "
                    "and the core, the start-up hook and FLOWTRACE_OTEL, every OTEL_* and "
                    "FLOWTRACE_OTEL_* variable, the exporter, protocol and endpoint, one real "
                    "test span, and the sys.monitoring tool ids. Exit code 0 when a span can "
                    "be delivered, 1 otherwise.")
    add_arguments(parser)


def run(ns: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run every check, print the report (text or JSON) and return the exit code."""
    out = out or sys.stdout
    timeout = max(0.1, ns.timeout)
    checks: list[Check] = []
    colour = not ns.json and _colour(out)
    for check in run_checks(timeout):
        checks.append(check)
        if not ns.json:
            print(format_check(check, colour), file=out, flush=True)
    code, last = summary(checks)
    if ns.json:
        document = {"ok": code == 0, "exit_code": code, "summary": last,
                    "checks": [dataclasses.asdict(c) for c in checks]}
        print(json.dumps(document, indent=2, default=repr), file=out)
    else:
        print(format_check(Check("result", OK if code == 0 else FAIL, last), colour), file=out)
    return code
