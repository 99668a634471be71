"""How the package installs: what `python -m build` makes, and what a user gets from the wheel.

The sdist and the wheel are built once per run (the wheel from the sdist, as pip and
cibuildwheel do, which also proves the sdist is complete); the wheel is installed into fresh
virtual environments outside the source tree. Slow (each venv reaches the package index):
``./dev test`` runs them, so CI does.
"""

from __future__ import annotations

import ast
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowtrace_otel.testing import OtlpReceiver

ROOT = Path(__file__).resolve().parent.parent
OLDEST = ROOT / ".ci" / "otel-oldest.txt"
pytestmark = pytest.mark.slow

SEED_TREE = ["→ fib(3)", "  → fib(2)", "    → fib(1)", "    → fib(0)", "  ← fib(2)",
             "  → fib(1)", "← fib(3)"]
FIB = "def fib(n):\n    return n if n <= 1 else fib(n-1) + fib(n-2)\n\nfib(3)\n"


def source_version() -> str:
    """``__version__`` as written in flowtrace_otel/__init__.py (the one place it is set)."""
    tree = ast.parse((ROOT / "flowtrace_otel" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__version__":
            return str(ast.literal_eval(node.value))
    raise AssertionError("no __version__ in flowtrace_otel/__init__.py")


def readme_seed() -> str:
    """The README's seed example: its Python block that defines fib and prints the tree."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    seed = next((b for b in blocks if "def fib" in b and "print_tree(" in b), None)
    assert seed is not None, "README.md has no seed example (def fib ... print_tree)"
    return seed


def source_copy(folder: Path) -> Path:
    """The project's sources, without venvs, build output or a compiled extension."""
    target = folder / "src"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "*.so", "__pycache__", ".*_cache",
        ".cache", ".hypothesis", "results"))
    return target


def fresh_venv(folder: Path) -> Path:
    """A new virtual environment; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    return folder / "bin" / "python"


def pip(python: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run pip in that environment; its combined output (fails the test on an error)."""
    done = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True,
                          timeout=900, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def installed_versions(python: Path) -> dict[str, str]:
    """``name -> version`` of every distribution in that environment."""
    probe = ("import importlib.metadata as m\n"
             "for d in m.distributions(): print(d.metadata['Name'].lower(), d.version)")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def clean_env(**extra: str) -> dict[str, str]:
    """An environment with nothing of this test run's (no PYTHONPATH, no FLOWTRACE_*/OTEL_*)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")
            or k.startswith("PIP_")}
    return {**keep, **extra}


def run_in(python: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the environment's python outside the source tree; fails the test on an error."""
    done = subprocess.run([str(python), *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``python -m build`` of a copy of the sources: ``{"wheel": ..., "sdist": ...}``."""
    folder = tmp_path_factory.mktemp("build")
    python = fresh_venv(folder / "venv")
    pip(python, "install", "-q", "build")
    done = subprocess.run([str(python), "-m", "build", "--outdir", str(folder / "dist"),
                           str(source_copy(folder))],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [wheel] = (folder / "dist").glob("*.whl")
    [sdist] = (folder / "dist").glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def user_venv(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed as a user would (its runtime dependencies only)."""
    python = fresh_venv(tmp_path_factory.mktemp("user") / "venv")
    pip(python, "install", "-q", str(dist["wheel"]))
    return python


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A live OTLP receiver on local ports."""
    with OtlpReceiver() as running:
        yield running


def wheel_metadata(wheel: Path) -> email.message.Message:
    """The wheel's METADATA, parsed."""
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def lower_bounds() -> dict[str, str]:
    """``name -> lower bound`` of the OpenTelemetry runtime dependencies in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for requirement in project["dependencies"]:
        name, _, bound = requirement.partition(">=")
        assert bound and "<" not in bound and "," not in bound, requirement
        bounds[name.strip()] = bound.strip()
    return bounds


# --- what the build makes --------------------------------------------------------------------

def test_the_wheel_has_the_hook_at_its_root_the_module_and_the_licence(
        dist: dict[str, Path]) -> None:
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    assert "flowtrace_otel.pth" in names  # at the root: site-packages runs it
    assert any(n.startswith("flowtrace_otel/_native.") and n.endswith(".so") for n in names)
    assert not any(n.startswith("flowtrace_otel/_native/") for n in names)  # no C in wheels
    assert "flowtrace_otel/py.typed" in names  # PEP 561: the types are part of the package
    version = source_version()
    assert f"flowtrace_otel-{version}.dist-info/licenses/LICENSE" in names
    assert not any(n.startswith(("tests/", "docs/", "bench/")) for n in names)


def test_the_sdist_has_what_a_packager_needs_to_build_and_test(dist: dict[str, Path]) -> None:
    members = {m.split("/", 1)[1] for m in tarfile.open(dist["sdist"]).getnames() if "/" in m}
    for needed in ("setup.py", "pyproject.toml", "LICENSE", "README.md",
                   "flowtrace_otel/startup/flowtrace_otel.pth", "flowtrace_otel/py.typed",
                   "flowtrace_otel/_native/module.c", "flowtrace_otel/_native/callbacks.c",
                   "flowtrace_otel/_native/state.h", "flowtrace_otel/_native/threadstack.h",
                   "tests/conftest.py", "tests/_programs.py", "examples/quickstart.py",
                   "docs/release.md", ".ci/otel-oldest.txt"):
        assert needed in members, needed
    assert not any(m.endswith(".so") or "__pycache__" in m for m in members)


def test_the_wheel_metadata_is_complete_and_its_version_is_the_source_one(
        dist: dict[str, Path]) -> None:
    meta = wheel_metadata(dist["wheel"])
    version = source_version()
    assert meta["Name"] == "flowtrace-otel"
    assert meta["Version"] == version
    assert dist["wheel"].name.startswith(f"flowtrace_otel-{version}-")
    assert dist["sdist"].name == f"flowtrace_otel-{version}.tar.gz"
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.12"
    classifiers = set(meta.get_all("Classifier") or [])
    assert {"Programming Language :: Python :: 3.12", "Programming Language :: Python :: 3.13",
            "Typing :: Typed", "Programming Language :: Python :: Implementation :: CPython",
            } <= classifiers
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    runtime = {r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r}
    assert runtime == {f"{name}>={bound}" for name, bound in lower_bounds().items()}


def test_the_oldest_pins_ci_tests_are_the_lower_bounds_of_pyproject() -> None:
    pins = dict(line.split("==") for line in OLDEST.read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    bounds = lower_bounds()
    assert {name: re.sub(r"(\.0)+$", "", pins.get(name, "?")) for name in bounds} == {
        name: re.sub(r"(\.0)+$", "", bound) for name, bound in bounds.items()}


# --- what a user gets from the wheel ---------------------------------------------------------

def test_the_installed_wheel_runs_the_seed_example_outside_the_source_tree(
        user_venv: Path, tmp_path: Path) -> None:
    seed = tmp_path / "seed.py"
    seed.write_text(readme_seed())
    done = run_in(user_venv, tmp_path, str(seed))
    assert [re.sub(r" \[\d+\.\d+s\]$", "", line) for line in done.stdout.splitlines()] == SEED_TREE
    where = run_in(user_venv, tmp_path, "-c",
                   "import flowtrace_otel; print(flowtrace_otel.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(user_venv.parent.parent)  # not the sources
    cli = user_venv.parent / "flowtrace-otel"
    version = subprocess.run([str(cli), "--version"], cwd=tmp_path, env=clean_env(),
                             capture_output=True, text=True, timeout=120, check=True)
    assert " ".join(version.stdout.split()).startswith(
        f"flowtrace-otel {source_version()}, core: ")


def test_the_start_up_hook_is_installed_and_inert_when_the_variable_is_unset(
        user_venv: Path, tmp_path: Path) -> None:
    site = run_in(user_venv, tmp_path, "-c",
                  "import sysconfig; print(sysconfig.get_path('purelib'))")
    hook = Path(site.stdout.strip()) / "flowtrace_otel.pth"
    assert hook.read_text() == (ROOT / "flowtrace_otel/startup/flowtrace_otel.pth").read_text()
    probe = ("import sys; print(sorted(m for m in sys.modules"
             " if m.startswith(('flowtrace', 'opentelemetry'))))")
    for unset in ({}, {"FLOWTRACE_OTEL": ""}, {"FLOWTRACE_OTEL": "0"}, {"FLOWTRACE_OTEL": "off"}):
        done = run_in(user_venv, tmp_path, "-c", probe, **unset)
        assert (done.stdout.strip(), done.stderr) == ("[]", ""), unset  # nothing imported
    on = run_in(user_venv, tmp_path, "-c", probe, FLOWTRACE_OTEL="1", OTEL_TRACES_EXPORTER="none")
    assert "flowtrace_otel.otel.bootstrap" in on.stdout


def test_flowtrace_otel_1_sends_the_spans_of_an_unchanged_program_to_a_receiver(
        user_venv: Path, tmp_path: Path, receiver: OtlpReceiver) -> None:
    (tmp_path / "app.py").write_text(FIB)
    run_in(user_venv, tmp_path, "app.py", FLOWTRACE_OTEL="1", OTEL_SERVICE_NAME="wheel-test",
           **receiver.env("http/protobuf"))
    spans = receiver.wait_for_spans(5)
    assert sorted(s["name"] for s in spans) == ["fib"] * 5
    assert {s["resource"]["service.name"] for s in spans} == {"wheel-test"}
    assert len({s["trace_id"] for s in spans}) == 1


def test_beside_opentelemetry_distro_nothing_is_downgraded_and_instrument_works(
        user_venv: Path, tmp_path: Path, receiver: OtlpReceiver) -> None:
    python = user_venv  # the wheel alone (this test runs last of those that share it)
    alone = installed_versions(python)
    output = pip(python, "install", "opentelemetry-distro")
    assert "dependency conflicts" not in output, output  # pip's resolver warning
    beside = installed_versions(python)
    changed = {name: (v, beside.get(name)) for name, v in alone.items() if beside.get(name) != v}
    # a change here is a downgrade forced by a pin (the latest distro's instrumentation pins
    # semantic-conventions, which pins the api): our ranges must leave the newest SDK possible
    assert changed == {}, changed
    assert "opentelemetry-distro" in beside
    pip(python, "check")
    (tmp_path / "app.py").write_text(FIB)
    instrument = python.parent / "opentelemetry-instrument"
    done = subprocess.run([str(instrument), str(python), "app.py"], cwd=tmp_path,
                          env=clean_env(FLOWTRACE_OTEL="1", OTEL_SERVICE_NAME="beside-distro",
                                        **receiver.env("http/protobuf")),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    spans = receiver.wait_for_spans(5)
    assert sorted(s["name"] for s in spans) == ["fib"] * 5
    assert {s["resource"]["service.name"] for s in spans} == {"beside-distro"}


def test_without_a_compiler_an_editable_install_is_pure_python_and_still_starts_up(
        tmp_path: Path) -> None:
    src = source_copy(tmp_path)
    python = fresh_venv(tmp_path / "venv")
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
