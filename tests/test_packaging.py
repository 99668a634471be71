"""How the package installs: the wheel and sdist contents, and a build without a compiler.

Slow (each test makes a fresh virtual environment and reaches the package index for the build
backend); ./dev test runs them, so CI does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def source_copy(folder: Path) -> Path:
    """The project's sources, without venvs, build output or a compiled extension."""
    target = folder / "src"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "*.so", "__pycache__", ".*_cache"))
    return target


def fresh_venv(folder: Path) -> Path:
    """A new virtual environment; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True,
                   timeout=300)
    return folder / "venv" / "bin" / "python"


def pip(python: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run pip in that environment; its combined output (fails the test on an error)."""
    done = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True,
                          timeout=900, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_wheel_has_the_start_up_hook_at_its_root_and_the_sdist_the_c_sources(
        tmp_path: Path) -> None:
    src = source_copy(tmp_path)
    python = fresh_venv(tmp_path)
    pip(python, "install", "-q", "build")
    subprocess.run([str(python), "-m", "build", "--outdir", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=900)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    [sdist] = (tmp_path / "dist").glob("*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    assert "flowtrace_otel.pth" in names  # at the root: site-packages runs it
    assert any(n.startswith("flowtrace_otel/_native.") and n.endswith(".so") for n in names)
    assert not any(n.startswith("flowtrace_otel/_native/") for n in names)  # no C in wheels
    members = {m.split("/", 1)[1] for m in tarfile.open(sdist).getnames() if "/" in m}
    for needed in ("setup.py", "flowtrace_otel/startup/flowtrace_otel.pth",
                   "flowtrace_otel/_native/module.c", "flowtrace_otel/_native/callbacks.c",
                   "flowtrace_otel/_native/state.h", "flowtrace_otel/_native/threadstack.h"):
        assert needed in members, needed


def test_without_a_compiler_an_editable_install_is_pure_python_and_still_starts_up(
        tmp_path: Path) -> None:
    src = source_copy(tmp_path)
    python = fresh_venv(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "CC": "/bin/false", "HOME": str(Path.home())}
    output = pip(python, "install", "-v", "-e", str(src), env=env)
    assert "flowtrace_otel: C core not built (" in output
    assert not list((src / "flowtrace_otel").glob("_native*.so"))
    version = subprocess.run([str(python), "-m", "flowtrace_otel", "--version"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, check=True)
    one_line = " ".join(version.stdout.split())  # argparse wraps --version to the terminal
    assert "core: python (native: not built: flowtrace_otel._native was not built" in one_line
    # the start-up hook is installed by the editable install too, and activates tracing
    probe = "import sys; print('flowtrace_otel.otel.bootstrap' in sys.modules)"
    for flag, expected in (("1", "True"), ("", "False")):
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                              env={**env, "FLOWTRACE_OTEL": flag,
                                   "OTEL_TRACES_EXPORTER": "none"},
                              cwd=tmp_path, timeout=120, check=True)
        assert done.stdout.strip() == expected, done.stderr
