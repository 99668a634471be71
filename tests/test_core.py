"""Choosing the core: FLOWTRACE_OTEL_CORE, the C extension's import error, --version."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import pytest

from flowtrace_otel import core
from flowtrace_otel.core import CoreUnavailable, choose_core


def built() -> ModuleType:
    """Stands in for a C extension that imported."""
    return ModuleType("flowtrace_otel._native")


def not_built() -> ModuleType:
    """Stands in for a C extension that was not built."""
    raise ImportError("No module named 'flowtrace_otel._native'")


def test_unset_uses_the_native_core_where_it_imports_and_says_so() -> None:
    choice = choose_core({}, importer=built)
    assert choice.recording == "native" and choice.requested is None
    assert choice.describe() == "native (native: hot path of calls and value capture in C)"
    asked = choose_core({"FLOWTRACE_OTEL_CORE": "python"}, importer=built)
    assert asked.describe() == "python (native: available, not used: FLOWTRACE_OTEL_CORE=python)"


def test_a_missing_c_core_keeps_its_import_error_for_diagnostics() -> None:
    choice = choose_core({}, importer=not_built)
    assert choice.native is None
    assert choice.describe() == ("python (native: not built: "
                                 "No module named 'flowtrace_otel._native')")


def test_asking_for_native_when_it_is_missing_is_an_error_naming_why() -> None:
    with pytest.raises(CoreUnavailable, match=r"FLOWTRACE_OTEL_CORE=native .*No module named"):
        choose_core({"FLOWTRACE_OTEL_CORE": "native"}, importer=not_built)


def test_asking_for_python_or_native_is_honoured() -> None:
    assert choose_core({"FLOWTRACE_OTEL_CORE": " Python "}, importer=built).requested == "python"
    native = choose_core({"FLOWTRACE_OTEL_CORE": "native"}, importer=built)
    assert native.requested == "native" and native.native is not None
    assert native.recording == "native"
    assert choose_core({"FLOWTRACE_OTEL_CORE": "python"}, importer=built).recording == "python"


def test_each_recording_core_has_its_monitor_class() -> None:
    from flowtrace_otel.monitoring import Monitor
    from flowtrace_otel.native_monitor import NativeMonitor

    assert core.monitor_class("python") is Monitor
    assert core.monitor_class("native") is NativeMonitor
    assert core.recording_cores(choose_core({}, importer=built)) == ("native", "python")
    assert core.recording_cores(choose_core({}, importer=not_built)) == ("python",)


def test_a_bad_value_says_so_in_one_line_and_falls_back(
        capsys: pytest.CaptureFixture[str]) -> None:
    choice = choose_core({"FLOWTRACE_OTEL_CORE": "fast"}, importer=built)
    assert choice.requested is None and choice.recording == "native"
    assert capsys.readouterr().err == (  # the settings' one rule (_settings.py)
        "flowtrace_otel: FLOWTRACE_OTEL_CORE='fast' is not 'native' or 'python'; "
        "using the default native where built, else python\n")


def test_the_source_folder_alone_is_not_a_c_core(monkeypatch: pytest.MonkeyPatch) -> None:
    # without the built file, flowtrace_otel/_native/ imports as an empty namespace package
    monkeypatch.setattr(core.importlib, "import_module", lambda name: ModuleType(name))
    with pytest.raises(ImportError, match="was not built"):
        core.import_native()


def test_the_choice_is_made_once_per_process() -> None:
    assert core.current_core() is core.current_core()


def run_version(prelude: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`flowtrace-otel --version` in a fresh interpreter after `prelude`."""
    code = f"{prelude}\nfrom flowtrace_otel.cli import main\nmain(['--version'])"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **env},
                          timeout=60, check=False)


def test_version_names_the_core() -> None:
    done = run_version("")
    assert done.returncode == 0
    assert done.stdout.startswith("flowtrace-otel 0.")
    assert done.stdout.rstrip().endswith(
        ", core: native (native: hot path of calls and value capture in C)")
    python = run_version("", FLOWTRACE_OTEL_CORE="python")
    assert python.stdout.rstrip().endswith(
        ", core: python (native: available, not used: FLOWTRACE_OTEL_CORE=python)")
    blocked = run_version("import sys; sys.modules['flowtrace_otel._native'] = None")
    assert ", core: python (native: not built: " in blocked.stdout


def test_version_says_why_native_cannot_run() -> None:
    blocked = "import sys; sys.modules['flowtrace_otel._native'] = None"
    done = run_version(blocked, FLOWTRACE_OTEL_CORE="native")
    assert done.returncode == 0
    assert "core: unavailable: FLOWTRACE_OTEL_CORE=native asked for the C core" in done.stdout
    assert "import of flowtrace_otel._native halted" in done.stdout
