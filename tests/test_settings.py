"""Settings are parsed in one place (issue 15.5) and bad ones say so in one line (issue 12.9).

* One table (:data:`flowtrace_otel._settings.SETTINGS`) names every ``FLOWTRACE_OTEL*`` variable
  the package reads; its defaults are the ones the code uses; the docs show the same table.
* One parser per type; the ``.pth`` start-up hook's truthiness rule agrees with it.
* A bad value is one line on stderr (variable, value, default used), also under
  ``PYTHONWARNINGS=error``, with the program's output and exit code unchanged, in the three
  modes; a misspelt name is pointed out with the closest known one.
"""

from __future__ import annotations

import dataclasses
import re
import types
import warnings
from pathlib import Path

import pytest
from _programs import PY, clean_env, run, write

from flowtrace_otel import Options, _settings
from flowtrace_otel._options import ENV_VARS, options_from_env, parse_bool, parse_int, warn_once
from flowtrace_otel._settings import BY_NAME, SETTINGS, read, unknown_names
from flowtrace_otel.otel import encoding, pipeline

PACKAGE = Path(_settings.__file__).parent
ROOT = PACKAGE.parent
PTH = PACKAGE / "startup" / "flowtrace_otel.pth"


# --- the table -----------------------------------------------------------------------------------

def test_every_variable_the_package_names_is_in_the_table() -> None:
    """Any ``FLOWTRACE_OTEL*`` name written in the package's code is a row of the table."""
    named = set()
    for source in PACKAGE.rglob("*.py"):
        named |= set(re.findall(r"\bFLOWTRACE_OTEL(?:_[A-Z0-9]+)*\b", source.read_text()))
    named |= set(re.findall(r"FLOWTRACE_OTEL\w*", PTH.read_text()))
    assert named - set(BY_NAME) == set()
    assert len(BY_NAME) == len(SETTINGS)  # no name twice


def test_table_defaults_are_the_ones_the_code_uses() -> None:
    defaults = Options()
    for setting in SETTINGS:
        if setting.option is not None:
            assert getattr(defaults, setting.option) == setting.default, setting.name
    assert BY_NAME["FLOWTRACE_OTEL_EXIT_TIMEOUT_MS"].default == pipeline.DEFAULT_EXIT_TIMEOUT_MS
    assert read("FLOWTRACE_OTEL_FAST_EXPORT", {}) is True and encoding.fast_export_enabled()
    assert ENV_VARS == {s.name: s.option for s in SETTINGS if s.option}
    fields = {f.name for f in dataclasses.fields(Options)}
    assert set(ENV_VARS.values()) <= fields


def test_the_docs_show_the_table() -> None:
    """docs/configuration.md holds the generated table, so it lists every variable."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert _settings.markdown_table() in doc, (
        "regenerate the table: python -c 'from flowtrace_otel._settings import markdown_table; "
        "print(markdown_table())'")
    for setting in SETTINGS:
        assert f"`{setting.name}`" in doc


# --- one parser per type -------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "value"), [
    ("1", True), ("true", True), (" TRUE ", True), ("Yes", True), ("on\n", True),
    ("0", False), ("false", False), ("No", False), (" OFF ", False),
])
def test_booleans(raw: str, value: bool, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_bool("X", raw, not value) is value
    assert read("FLOWTRACE_OTEL_FULL_REPR", {"FLOWTRACE_OTEL_FULL_REPR": raw}) is value
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("raw", ["", "  ", "\t"])
def test_empty_means_the_default(raw: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A blank value is the same as an unset one, for every type, without a warning."""
    env = {setting.name: raw for setting in SETTINGS}
    for setting in SETTINGS:
        assert read(setting.name, env) == setting.default
    assert options_from_env(env) == Options()
    assert capsys.readouterr().err == ""


def test_integers(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_int("X", " 12 ", 3) == 12
    assert parse_int("X", "0", 3) == 0
    assert parse_int("X", "0", 3, minimum=1) == 3
    assert "X='0' is not an integer >= 1; using the default 3" in capsys.readouterr().err
    assert read("FLOWTRACE_OTEL_EXIT_TIMEOUT_MS", {"FLOWTRACE_OTEL_EXIT_TIMEOUT_MS": "250"}) == 250


@pytest.mark.parametrize(("name", "raw", "shown"), [
    ("FLOWTRACE_OTEL", "maybe", "0"),
    ("FLOWTRACE_OTEL_FAST_EXPORT", "fast", "1"),
    ("FLOWTRACE_OTEL_EXIT_TIMEOUT_MS", "3s", "3000"),
    ("FLOWTRACE_OTEL_MAX_SPANS", "-1", "2000"),
    ("FLOWTRACE_OTEL_DEBUG", "yes", "(unset)"),
])
def test_a_bad_value_is_one_line_naming_the_default(
        name: str, raw: str, shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read(name, {name: raw}) == BY_NAME[name].default
        assert read(name, {name: raw}) == BY_NAME[name].default
    err = capsys.readouterr().err
    assert err.startswith(f"flowtrace_otel: {name}={raw!r} is not ")
    assert err.endswith(f"; using the default {shown}\n") and err.count("\n") == 1


def test_warn_once_never_raises_into_the_program(capsys: pytest.CaptureFixture[str]) -> None:
    """Under warnings-as-errors, a tracer warning becomes a line on stderr, not an exception."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_once("k", "flowtrace_otel: something")
        warn_once("k", "flowtrace_otel: something")
    assert capsys.readouterr().err == "flowtrace_otel: something\n"
    with pytest.warns(RuntimeWarning, match="other"):  # still a warning where allowed
        warn_once("k2", "other")


# --- the .pth start-up hook agrees with the parser -----------------------------------------------

GATE_VALUES = ["", " ", "0", "false", "FALSE", " no ", "Off", "off\n", "1", "true", " On ",
               "YES", "yes\t", "2", "maybe", "tru", "enable", "١", "\u00a0on\u00a0", "0.0",
               "none", "-1"]


def pth_gate(value: str | None) -> bool:
    """Whether the installed ``.pth`` line would import the bootstrap, for this value."""
    line = PTH.read_text().strip()
    assert line.startswith("import os; ") and line.count(" and ") == 1
    condition = line.removeprefix("import os; ").split(" and ")[0]
    fake_os = types.SimpleNamespace(environ={} if value is None else {"FLOWTRACE_OTEL": value})
    return bool(eval(condition, {"os": fake_os}))


@pytest.mark.parametrize("value", [None, *GATE_VALUES])
def test_pth_gate_agrees_with_the_parser(value: str | None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The hook stays closed exactly when the parser reads 'off' without complaint.

    A true value opens it; a bad one opens it too, so that the bootstrap can say it is bad.
    """
    env = {} if value is None else {"FLOWTRACE_OTEL": value}
    on = read("FLOWTRACE_OTEL", env)
    complained = capsys.readouterr().err != ""
    assert pth_gate(value) == (on or complained)


def test_pth_stays_tiny() -> None:
    """One line, importing only ``os`` (already imported by ``site``) before its gate."""
    text = PTH.read_text()
    assert text.count("\n") <= 1 and len(text) < 250
    assert text.index("import_module") > text.index(" and ")


@pytest.mark.parametrize(("value", "started"), [(" On ", True), ("YES", True), ("OFF", False),
                                                ("no", False)])
def test_flag_values_in_a_real_interpreter(value: str, started: bool, tmp_path: Path) -> None:
    probe = "import sys; print('flowtrace_otel.otel.bootstrap' in sys.modules)"
    result = run([PY, "-c", probe], clean_env(FLOWTRACE_OTEL=value, OTEL_TRACES_EXPORTER="none"),
                 tmp_path)
    assert (result.code, result.stdout, result.stderr) == (0, f"{started}\n", "")


# --- bad settings in the three modes (issue 12.9) ------------------------------------------------

PROGRAM = """
    import sys
    {prelude}
    def work(n):
        return n * 2
    {body}
    print("result", work(21))
    print("to stderr", file=sys.stderr)
    sys.exit(3)
"""
SESSION = ("from flowtrace_otel import TraceSession", "with TraceSession() as s:\n        work(1)")
BAD = {
    "FLOWTRACE_OTEL_MAX_REPR": "big",
    "FLOWTRACE_OTEL_CAPTURE_ARGS": "maybe",
    "FLOWTRACE_OTEL_EXIT_TIMEOUT_MS": "soon",
    "FLOWTRACE_OTEL_FAST_EXPORT": "fast",
    "FLOWTRACE_OTEL_MAX_REPER": "10",
}
EXPECTED = [
    "flowtrace_otel: FLOWTRACE_OTEL_MAX_REPR='big' is not an integer >= 0; using the default 80",
    "flowtrace_otel: FLOWTRACE_OTEL_CAPTURE_ARGS='maybe' is not a boolean (1/0, true/false, "
    "yes/no, on/off); using the default 1",
    "flowtrace_otel: FLOWTRACE_OTEL_EXIT_TIMEOUT_MS='soon' is not an integer >= 0; "
    "using the default 3000",
    "flowtrace_otel: FLOWTRACE_OTEL_FAST_EXPORT='fast' is not a boolean (1/0, true/false, "
    "yes/no, on/off); using the default 1",
    "flowtrace_otel: FLOWTRACE_OTEL_MAX_REPER is not a flowtrace_otel setting and is ignored "
    "(did you mean FLOWTRACE_OTEL_MAX_REPR?)",
]


@pytest.mark.parametrize("mode", ["env", "cli", "session"])
@pytest.mark.parametrize("warnings_filter", ["", "error"])
def test_bad_settings_are_one_line_each(mode: str, warnings_filter: str, tmp_path: Path) -> None:
    prelude, body = SESSION if mode == "session" else ("", "")
    script = write(tmp_path, PROGRAM.format(prelude=prelude, body=body))
    plain = run([PY, script.name], clean_env(), tmp_path)
    assert (plain.code, plain.stdout, plain.stderr) == (3, "result 42\n", "to stderr\n")
    env = clean_env(PYTHONWARNINGS=warnings_filter, **BAD) if warnings_filter else clean_env(**BAD)
    cmd = [PY, script.name]
    if mode == "env":
        env.update(FLOWTRACE_OTEL="1", OTEL_TRACES_EXPORTER="none")
    elif mode == "cli":
        cmd = [PY, "-m", "flowtrace_otel", "run", script.name]
    traced = run(cmd, env, tmp_path)
    assert (traced.code, traced.stdout) == (plain.code, plain.stdout)
    assert "Traceback" not in traced.stderr and "Warning" not in traced.stderr
    lines = traced.stderr.splitlines()
    ours = [line for line in lines if line.startswith("flowtrace_otel:")]
    assert sorted(ours) == sorted(EXPECTED)  # every variable is checked, in every mode
    assert "to stderr" in lines


def test_misspelt_names_get_the_closest_known_one() -> None:
    env = {"FLOWTRACE_OTEL_MAX_REPER": "1", "FLOWTRACE_OTEL_CAPTURE_ARG": "0",
           "FLOWTRACE_OTEL_WHATEVER_ELSE": "1", "FLOWTRACE_OTEL_REDACT": "pin", "HOME": "/",
           "FLOWTRACE_OTELL": "1"}
    assert unknown_names(env) == [("FLOWTRACE_OTELL", "FLOWTRACE_OTEL"),
                                  ("FLOWTRACE_OTEL_CAPTURE_ARG", "FLOWTRACE_OTEL_CAPTURE_ARGS"),
                                  ("FLOWTRACE_OTEL_MAX_REPER", "FLOWTRACE_OTEL_MAX_REPR"),
                                  ("FLOWTRACE_OTEL_WHATEVER_ELSE", None)]


def test_unknown_names_are_pointed_out_once(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"FLOWTRACE_OTEL_WHATEVER_ELSE": "1"}
    options_from_env(env)
    options_from_env(env)
    assert capsys.readouterr().err == (
        "flowtrace_otel: FLOWTRACE_OTEL_WHATEVER_ELSE is not a flowtrace_otel setting and is "
        "ignored (see docs/configuration.md)\n")
