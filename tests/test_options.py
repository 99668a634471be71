"""Options: defaults, FLOWTRACE_OTEL_* parsing, bad values warn once and fall back."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings

import pytest

from flowtrace_otel import Options, get_config, session
from flowtrace_otel._options import ENV_VARS, options_from_env


def test_every_env_var_names_a_field() -> None:
    fields = {f.name for f in dataclasses.fields(Options)}
    assert set(ENV_VARS.values()) <= fields
    assert all(var.startswith("FLOWTRACE_OTEL_") for var in ENV_VARS)


def test_documented_defaults() -> None:
    opts = Options()
    assert (opts.include, opts.exclude, opts.capture_args, opts.capture_result) == (
        (), (), True, True)
    assert (opts.max_repr, opts.max_items, opts.full_repr) == (80, 8, False)
    assert "password" in opts.redact and "token$" in opts.redact


def test_good_env_values() -> None:
    opts = options_from_env({
        "FLOWTRACE_OTEL_INCLUDE": "a, b.*,,",
        "FLOWTRACE_OTEL_CAPTURE_ARGS": "off",
        "FLOWTRACE_OTEL_CAPTURE_RESULT": " TRUE ",
        "FLOWTRACE_OTEL_MAX_REPR": " 40 ",
        "FLOWTRACE_OTEL_FULL_REPR": "yes",
        "FLOWTRACE_OTEL_REDACT": "pin",
    })
    assert opts.include == ("a", "b.*")
    assert (opts.capture_args, opts.capture_result, opts.max_repr, opts.full_repr) == (
        False, True, 40, True)
    assert opts.redact == ("pin",)


@pytest.mark.parametrize(("var", "raw", "field", "default"), [
    ("FLOWTRACE_OTEL_MAX_REPR", "lots", "max_repr", 80),
    ("FLOWTRACE_OTEL_MAX_REPR", "-5", "max_repr", 80),
    ("FLOWTRACE_OTEL_MAX_ITEMS", "1.5", "max_items", 8),
    ("FLOWTRACE_OTEL_CAPTURE_ARGS", "maybe", "capture_args", True),
    ("FLOWTRACE_OTEL_FULL_REPR", "2", "full_repr", False),
])
def test_bad_env_value_warns_once_and_keeps_the_default(
        var, raw, field, default, capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one line on stderr, never a Python warning
        opts = options_from_env({var: raw})
    assert getattr(opts, field) == default
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    shown = {True: "1", False: "0"}.get(default, str(default))
    assert var in err and repr(raw) in err and f"using the default {shown}" in err
    assert getattr(options_from_env({var: raw}), field) == default
    assert capsys.readouterr().err == ""  # a second read does not warn again


def test_bad_value_leaves_the_other_settings_alone(capsys: pytest.CaptureFixture[str]) -> None:
    opts = options_from_env({"FLOWTRACE_OTEL_MAX_REPR": "x", "FLOWTRACE_OTEL_MAX_ITEMS": "3"})
    assert (opts.max_repr, opts.max_items) == (80, 3)
    assert "FLOWTRACE_OTEL_MAX_REPR='x'" in capsys.readouterr().err


def test_reset_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWTRACE_OTEL_MAX_ITEMS", "2")
    session.reset_config()
    assert get_config()["max_items"] == 2


def test_replace_rejects_unknown_names_and_coerces_lists() -> None:
    with pytest.raises(TypeError, match="bogus"):
        Options().replace(bogus=1)
    opts = Options().replace(include="one", exclude=["a", "b"])
    assert opts.include == ("one",) and opts.exclude == ("a", "b")
    hash(opts)  # still usable as a key


def test_bad_env_value_in_a_real_program_warns_once_and_runs() -> None:
    code = ("import flowtrace_otel\n"
            "from flowtrace_otel._options import options_from_env\n"
            "options_from_env()\n"
            "print(flowtrace_otel.get_config()['max_repr'])\n")
    env = {**os.environ, "FLOWTRACE_OTEL_MAX_REPR": "big"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout == "80\n"
    assert done.stderr == ("flowtrace_otel: FLOWTRACE_OTEL_MAX_REPR='big' is not an integer >= 0;"
                           " using the default 80\n")
