"""Every FLOWTRACE_OTEL* variable is read through _settings, by one rule (issue 15.5).

Before, ``FLOWTRACE_OTEL_CORE`` had a parser of its own in ``core.py``: a bad value was a
``RuntimeWarning`` (an exception under ``PYTHONWARNINGS=error``, which crashed the traced
program) besides the settings' line, and ``Native`` was accepted there but called bad by the
settings check; ``FLOWTRACE_OTEL_DEBUG`` was compared raw in ``monitoring.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _programs import PY, clean_env, run, write

from flowtrace_otel import _settings
from flowtrace_otel.core import choose_core

PACKAGE = Path(_settings.__file__).parent
#: a read of the environment naming a FLOWTRACE_OTEL* variable, or a constant holding one
READ = re.compile(r"(?:environ|env|getenv)\s*(?:\.get\(|\[|\()\s*"
                  r"""(?:["']FLOWTRACE_OTEL|[A-Z_]*_ENV\b)""")
#: modules that may read raw values: the parser itself, and the doctor, which shows them
RAW_READERS = {"_settings.py", "doctor.py"}


def test_no_module_but_the_settings_parses_a_flowtrace_variable_itself() -> None:
    readers = {
        f"{source.relative_to(PACKAGE)}:{number}": line.strip()
        for source in PACKAGE.rglob("*.py") if source.name not in RAW_READERS
        for number, line in enumerate(source.read_text().splitlines(), 1) if READ.search(line)
    }
    assert readers == {}


def built() -> object:
    return object()


@pytest.mark.parametrize(("raw", "core"), [("Native", "native"), (" PYTHON ", "python"),
                                           ("python", "python")])
def test_the_core_variable_takes_any_case_and_says_nothing(
        raw: str, core: str, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"FLOWTRACE_OTEL_CORE": raw}
    assert choose_core(env, importer=built).requested == core  # type: ignore[arg-type]
    _settings.check_environment(env)  # the start-up check agrees: no complaint
    assert capsys.readouterr().err == ""


def test_the_debug_variable_is_read_by_the_same_rule() -> None:
    assert _settings.read("FLOWTRACE_OTEL_DEBUG", {"FLOWTRACE_OTEL_DEBUG": " Raise "}) == "raise"


def test_a_bad_core_value_under_warnings_as_errors_leaves_the_program_alone(
        tmp_path: Path) -> None:
    script = write(tmp_path, """
        import sys
        def work(n):
            return n * 2
        print("result", work(21))
        sys.exit(3)
    """)
    plain = run([PY, script.name], clean_env(), tmp_path)
    assert (plain.code, plain.stdout, plain.stderr) == (3, "result 42\n", "")
    env = clean_env(FLOWTRACE_OTEL_CORE="fast", PYTHONWARNINGS="error")
    for cmd, extra in (([PY, "-m", "flowtrace_otel", "run", script.name], {}),
                       ([PY, script.name], {"FLOWTRACE_OTEL": "1",
                                            "OTEL_TRACES_EXPORTER": "none"})):
        traced = run(cmd, {**env, **extra}, tmp_path)
        assert (traced.code, traced.stdout) == (3, "result 42\n"), traced.stderr
        ours = [line for line in traced.stderr.splitlines() if "FLOWTRACE_OTEL_CORE" in line]
        assert ours == ["flowtrace_otel: FLOWTRACE_OTEL_CORE='fast' is not 'native' or "
                        "'python'; using the default native where built, else python"], cmd
        assert "Traceback" not in traced.stderr
