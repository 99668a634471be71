"""What leaves the process, and what never does (issue 7.6, issue 3.6).

* Secret-looking parameter names (and dict keys) are ``[REDACTED]`` in the core tree, the CLI's
  tree and the exported spans; the secret text appears nowhere in what is exported.
* ``capture_args=False`` / ``FLOWTRACE_OTEL_CAPTURE_ARGS=0`` (and the result switch) turn value
  capture off. Exception messages are still recorded: docs/security.md says so.
* Nothing is written to disk unless asked (``--json``).
* The start-up hook imports nothing when ``FLOWTRACE_OTEL`` is unset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _programs import PY, clean_env, mode_env, run, write

from flowtrace_otel import TraceSession
from flowtrace_otel.testing import OtlpReceiver

SECRETS = ("S3CRET-PW", "S3CRET-KEY", "S3CRET-HDR", "S3CRET-SESSION", "S3CRET-TOKEN",
           "S3CRET-COOKIE")

PROGRAM = """
    import sys

    def connect(host, password, api_key=None, **options):
        return {"host": host, "session": "S3CRET-SESSION", "n": 1}

    def check(user, Auth_Token):
        return Auth_Token == "ok"

    def request(url, headers):
        return len(headers)

    def main():
        connect("db", "S3CRET-PW", api_key="S3CRET-KEY", auth_header="S3CRET-HDR", retries=3)
        check("bob", "S3CRET-TOKEN")
        request("/x", {"Cookie": "S3CRET-COOKIE", "Accept": "text/html"})
        print("done", len(sys.argv))

    main()
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    """A live OTLP/HTTP receiver for the module."""
    with OtlpReceiver(grpc=False) as running:
        yield running


def exported(receiver: OtlpReceiver, script: Path) -> list[dict[str, Any]]:
    """The spans received for functions of ``script``."""
    return [s for s in receiver.spans() if s["attributes"].get("code.file.path") == str(script)]


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Span attributes by span name."""
    return {s["name"]: s["attributes"] for s in spans}


# --- redaction -----------------------------------------------------------------------------------

def test_spans_redact_secret_names(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """Secret-looking parameters, ``**kwargs`` keys and result dict keys are [REDACTED]."""
    script = write(tmp_path, PROGRAM)
    result = run([PY, script.name, "--password=S3CRET-ARGV"], mode_env("env", receiver.env()),
                 tmp_path)
    assert result.code == 0 and result.stdout == "done 2\n", result.stderr
    spans = exported(receiver, script)
    attrs = by_name(spans)
    assert attrs["connect"]["flowtrace.arg.host"] == "'db'"
    assert attrs["connect"]["flowtrace.arg.password"] == "[REDACTED]"
    assert attrs["connect"]["flowtrace.arg.api_key"] == "[REDACTED]"
    assert "'retries': 3" in attrs["connect"]["flowtrace.arg.options"]
    assert attrs["check"]["flowtrace.arg.Auth_Token"] == "[REDACTED]"
    assert "'Accept': 'text/html'" in attrs["request"]["flowtrace.arg.headers"]
    everything = json.dumps(spans)
    leaked = [s for s in (*SECRETS, "S3CRET-ARGV") if s in everything]
    assert leaked == [], leaked


def test_core_tree_redacts(tmp_path: Path) -> None:
    """The CLI's printed tree shows [REDACTED] and never the secret text."""
    write(tmp_path, PROGRAM)
    result = run([PY, "-m", "flowtrace_otel", "run", "prog.py"], clean_env(), tmp_path)
    assert result.code == 0
    assert "[REDACTED]" in result.stderr and "connect('db'" in result.stderr
    assert [s for s in SECRETS if s in result.stderr] == []


def login(user: str, password: str, otp_pin: str) -> bool:
    """A user function with a secret parameter."""
    return bool(user and password and otp_pin)


def test_session_redacts_and_is_configurable() -> None:
    """In-process sessions redact by default; ``redact=`` adds names of one's own."""
    with TraceSession() as session:
        login("ann", "pw-1", "1234")
    (event,) = session.events
    assert event.args == [("user", "'ann'", "p"), ("password", "[REDACTED]", "p"),
                          ("otp_pin", "'1234'", "p")]
    with TraceSession(redact=("password", "pin")) as session:
        login("ann", "pw-1", "1234")
    (event,) = session.events
    assert [text for _, text, _ in event.args] == ["'ann'", "[REDACTED]", "[REDACTED]"]


def test_redact_from_the_environment(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """``FLOWTRACE_OTEL_REDACT`` sets the names for FLOWTRACE_OTEL=1 runs."""
    script = write(tmp_path, """
        def pay(card_number, amount):
            return amount
        pay("4111-1111", 10)
    """)
    env = mode_env("env", receiver.env(), FLOWTRACE_OTEL_REDACT="card,password")
    assert run([PY, script.name], env, tmp_path).code == 0
    attrs = by_name(exported(receiver, script))["pay"]
    assert attrs["flowtrace.arg.card_number"] == "[REDACTED]"
    assert attrs["flowtrace.arg.amount"] == "10"


WORDS_PROGRAM = """
    def tokenize(text, tokens, tokenizer, author, secretary_name):
        return {"tokens": tokens, "author": author}

    def login(user, token, bearer_token, password, **extra):
        return {"access_token": "S3CRET-AT", "user": user, "token_ids": [7, 8]}

    tokenize("a b", ["a", "b"], "bpe", "Ann", "Bo")
    login("ann", "S3CRET-T", "S3CRET-B", "S3CRET-P", api_key="S3CRET-K", headers={
        "Authorization": "Bearer S3CRET-H", "Accept": "*/*"})
"""


def test_spans_hide_secrets_by_word_not_data(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """``tokens``, ``tokenizer``, ``author``, ``secretary_name`` are exported; secrets are not."""
    script = write(tmp_path, WORDS_PROGRAM)
    assert run([PY, script.name], mode_env("env", receiver.env()), tmp_path).code == 0
    spans = exported(receiver, script)
    attrs = by_name(spans)
    assert attrs["tokenize"]["flowtrace.arg.tokens"] == "['a', 'b']"
    assert attrs["tokenize"]["flowtrace.arg.tokenizer"] == "'bpe'"
    assert attrs["tokenize"]["flowtrace.arg.author"] == "'Ann'"
    assert attrs["tokenize"]["flowtrace.arg.secretary_name"] == "'Bo'"
    assert attrs["tokenize"]["flowtrace.return"] == "{'tokens': ['a', 'b'], 'author': 'Ann'}"
    for name in ("token", "bearer_token", "password"):
        assert attrs["login"][f"flowtrace.arg.{name}"] == "[REDACTED]"
    assert "'api_key': [REDACTED]" in attrs["login"]["flowtrace.arg.extra"]
    assert "'Authorization': [REDACTED]" in attrs["login"]["flowtrace.arg.extra"]
    assert attrs["login"]["flowtrace.return"] == (
        "{'access_token': [REDACTED], 'user': 'ann', 'token_ids': [7, 8]}")
    assert "S3CRET" not in json.dumps(spans)


def test_redact_plus_adds_to_the_defaults(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """``FLOWTRACE_OTEL_REDACT=+card`` hides ``card_number`` and still the default names."""
    script = write(tmp_path, """
        def pay(card_number, password, amount):
            return amount
        pay("4111-1111", "S3CRET-PW", 10)
    """)
    env = mode_env("env", receiver.env(), FLOWTRACE_OTEL_REDACT="+card")
    assert run([PY, script.name], env, tmp_path).code == 0
    attrs = by_name(exported(receiver, script))["pay"]
    assert attrs["flowtrace.arg.card_number"] == "[REDACTED]"
    assert attrs["flowtrace.arg.password"] == "[REDACTED]"
    assert attrs["flowtrace.arg.amount"] == "10"


# --- switching capture off -----------------------------------------------------------------------

def test_capture_switched_off_in_spans(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """``FLOWTRACE_OTEL_CAPTURE_ARGS=0`` and ``..._RESULT=0``: no argument or result attributes."""
    script = write(tmp_path, """
        def add(a, b):
            return a + b
        add(1234567, 7654321)
    """)
    env = mode_env("env", receiver.env(), FLOWTRACE_OTEL_CAPTURE_ARGS="0",
                   FLOWTRACE_OTEL_CAPTURE_RESULT="0")
    assert run([PY, script.name], env, tmp_path).code == 0
    (span,) = exported(receiver, script)
    assert span["name"] == "add"
    assert [k for k in span["attributes"] if k.startswith("flowtrace.arg.")] == []
    assert "flowtrace.return" not in span["attributes"]
    assert "1234567" not in json.dumps(span) and "8888888" not in json.dumps(span)


def test_capture_switched_off_in_sessions() -> None:
    """``capture_args=False, capture_result=False``: events carry no values."""
    with TraceSession(capture_args=False, capture_result=False) as session:
        login("ann", "pw-1", "1234")
    (event,) = session.events
    assert event.args == [] and event.result_repr is None


def test_exception_messages_are_exported(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """Exception messages leave the process even with value capture off (docs/security.md warns)."""
    script = write(tmp_path, """
        def check(token):
            raise PermissionError("bad token S3CRET-TOKEN")
        try:
            check("x")
        except PermissionError:
            pass
    """)
    env = mode_env("env", receiver.env(), FLOWTRACE_OTEL_CAPTURE_ARGS="0",
                   FLOWTRACE_OTEL_CAPTURE_RESULT="0")
    assert run([PY, script.name], env, tmp_path).code == 0
    (span,) = exported(receiver, script)
    assert span["status"] == "STATUS_CODE_ERROR"
    assert span["events"][0]["attributes"]["exception.message"] == "bad token S3CRET-TOKEN"


# --- nothing written to disk ---------------------------------------------------------------------

def tree_of(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("mode", ["env", "cli", "cli-json"])
def test_nothing_written_unless_asked(mode: str, tmp_path: Path, receiver: OtlpReceiver) -> None:
    """Tracing writes no file to the working folder, HOME or TMPDIR; ``--json`` writes one."""
    work, home, tmp = tmp_path / "work", tmp_path / "home", tmp_path / "tmp"
    for folder in (work, home, tmp):
        folder.mkdir()
    write(work, PROGRAM)
    private = {"HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(home / ".cache")}
    private["PYTHONDONTWRITEBYTECODE"] = "1"
    if mode == "env":
        result = run([PY, "prog.py"], mode_env("env", receiver.env(), **private), work)
    else:
        extra = ["--json", "calls.json"] if mode == "cli-json" else []
        result = run([PY, "-m", "flowtrace_otel", "run", *extra, "prog.py"],
                     clean_env(**private), work)
    assert result.code == 0, result.stderr
    expected = ["calls.json", "prog.py"] if mode == "cli-json" else ["prog.py"]
    assert tree_of(work) == expected
    assert tree_of(home) == [] and tree_of(tmp) == []


# --- the start-up hook ---------------------------------------------------------------------------

PROBE = ("import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
         "('flowtrace_otel', 'opentelemetry', 'grpc', 'google', 'requests', 'urllib3')))")


@pytest.mark.parametrize("value", [None, "", "0", "false", "off"])
def test_startup_hook_imports_nothing_when_off(value: str | None, tmp_path: Path) -> None:
    """With FLOWTRACE_OTEL unset or off, a new interpreter has imported none of our modules."""
    env = clean_env() if value is None else clean_env(FLOWTRACE_OTEL=value)
    result = run([PY, "-c", PROBE], env, tmp_path)
    assert result.code == 0 and result.stderr == ""
    assert result.stdout == "[]\n"


def test_startup_hook_is_installed(tmp_path: Path) -> None:
    """The same probe sees the bridge when FLOWTRACE_OTEL=1 (so the test above can fail)."""
    result = run([PY, "-c", PROBE], clean_env(FLOWTRACE_OTEL="1", OTEL_TRACES_EXPORTER="none"),
                 tmp_path)
    assert "flowtrace_otel.otel" in result.stdout

