"""``flowtrace-otel run``: every option of ``--help`` works, the program named is user code,
and a run that recorded nothing says why in one line."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _programs import clean_env

from flowtrace_otel import TraceSession, cli, start_tracing, stop_tracing
from flowtrace_otel.testing import OtlpReceiver

BIN = Path(sys.executable).parent
CONSOLE = str(BIN / "flowtrace-otel")
PROGRAM = """\
import sys

def shout(word, items):
    return word.upper() * len(items)

print(shout(sys.argv[1] if len(sys.argv) > 1 else "x", [1, 2, 3, 4, 5]))
print("argv", sys.argv[1:])
sys.exit(3)
"""


def run(cmd: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(NO_COLOR="1", **extra)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
                          check=False)


def help_options() -> list[str]:
    """Every option ``flowtrace-otel run --help`` lists (``-h`` aside)."""
    text = subprocess.run([CONSOLE, "run", "--help"], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    listed = text.split("\noptions:", 1)[1].split("\n\n", 1)[0]
    return [o for o in re.findall(r"^  (-[-\w]+)", listed, re.M) + re.findall(
        r", (--[-\w]+)", listed) if o not in ("-h", "--help")]


def run_actions() -> dict[str, argparse.Action]:
    """The parser's actions of ``run``, by option string."""
    parser = cli._subparser(cli.build_parser(), "run")
    return {option: action for action in parser._actions for option in action.option_strings}


def a_value(option: str, action: argparse.Action, tmp_path: Path) -> list[str]:
    """A valid value for ``option`` (none for a switch), chosen from what it declares."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(next(iter(action.choices)))]
    metavar = action.metavar or option.lstrip("-").upper()
    values = {"N": "3", "PATTERN": "*/nothing_here.py", "FILE": str(
        tmp_path / f"out{option.replace('-', '_')}")}
    assert metavar in values, f"the test needs a valid value for {option} {metavar}"
    return [values[metavar]]


def test_help_lists_every_option_of_the_parser() -> None:
    listed = set(help_options())
    assert listed == set(run_actions()) - {"-h", "--help"}
    assert "--max-items" in listed


def test_docs_list_every_option_of_the_parser() -> None:
    """docs/cli.md's table names each option of ``run``, and nothing else."""
    table = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    documented = set(re.findall(r"^\| `(-[-\w]+)", table, re.M)) | set(
        re.findall(r"^\| `-h`, `(--help)`", table, re.M))
    assert documented == set(run_actions())


def test_valued_options_are_read_off_the_parser() -> None:
    valued = cli.valued_options(cli.build_parser())
    assert {"--include", "--exclude", "--max-repr", "--max-items", "--max-lines", "--json",
            "-m"} <= valued
    assert "--no-args" not in valued and "--otel" not in valued


def test_every_option_of_help_is_accepted(tmp_path: Path) -> None:
    """Each option, with a valid value, leaves the program's output and exit code alone."""
    (tmp_path / "prog.py").write_text(PROGRAM)
    plain = run([sys.executable, "prog.py", "hey", "--max-items", "2"], tmp_path)
    assert plain.returncode == 3
    actions = run_actions()
    tried = []
    for option in help_options():
        if option == "-m":
            cmd = [CONSOLE, "run", "-m", "prog", "hey", "--max-items", "2"]
        else:
            value = a_value(option, actions[option], tmp_path)
            cmd = [CONSOLE, "run", option, *value, "prog.py", "hey", "--max-items", "2"]
        if option == "--otel":
            with OtlpReceiver(grpc=False) as receiver:
                done = run(cmd, tmp_path, **receiver.env())
        else:
            done = run(cmd, tmp_path)
        assert (done.returncode, done.stdout) == (plain.returncode, plain.stdout), (
            option, done.stderr)
        assert "error:" not in done.stderr, (option, done.stderr)
        tried.append(option)
    assert len(tried) == len(set(tried)) >= 13


def test_max_items_takes_its_value(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(PROGRAM)
    done = run([CONSOLE, "run", "--max-items", "3", "prog.py"], tmp_path)
    assert done.returncode == 3, done.stderr
    assert "→ shout('x', [1, 2, 3, ...+2])" in done.stderr


def test_an_abbreviated_option_is_refused_not_misread(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(PROGRAM)
    done = run([CONSOLE, "run", "--max-it", "3", "prog.py"], tmp_path)
    assert done.returncode == 2
    assert "unrecognized arguments: --max-it" in done.stderr


# --- the program you run is yours --------------------------------------------------------------

BAD_STYLE = "import os\nx=1\n"


def test_an_installed_console_script_is_traced(tmp_path: Path) -> None:
    """``flowtrace-otel run $(which pycodestyle) file.py``: pycodestyle's calls are shown."""
    script = shutil.which("pycodestyle", path=str(BIN))
    assert script is not None, "pycodestyle is in the test extra"
    (tmp_path / "bad.py").write_text(BAD_STYLE)
    plain = run([script, "bad.py"], tmp_path)
    done = run([CONSOLE, "run", script, "bad.py"], tmp_path)
    assert (done.returncode, done.stdout) == (plain.returncode, plain.stdout) != (0, "")
    assert "→ _main()" in done.stderr
    assert re.search(r"Checker\.check_all\(<Checker>", done.stderr), done.stderr[:2000]
    assert "site-packages" in cli._module_location("pycodestyle") or ""


def test_an_installed_module_run_with_m_is_traced(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(BAD_STYLE)
    plain = run([sys.executable, "-m", "pycodestyle", "bad.py"], tmp_path)
    done = run([CONSOLE, "run", "-m", "pycodestyle", "bad.py"], tmp_path)
    assert (done.returncode, done.stdout) == (plain.returncode, plain.stdout)
    assert "→ _main()" in done.stderr


def test_the_programs_libraries_stay_out(tmp_path: Path) -> None:
    """Only the program named is added: what it imports from site-packages is not."""
    (tmp_path / "prog.py").write_text(
        "import yaml\ndef dump():\n    return yaml.safe_dump([1])\nprint(dump(), end='')\n")
    done = run([CONSOLE, "run", "--no-timing", "prog.py"], tmp_path)
    assert (done.returncode, done.stdout) == (0, "- 1\n")
    assert done.stderr == "→ dump()\n"


def test_include_replaces_the_program_default(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(BAD_STYLE)
    done = run([CONSOLE, "run", "--include", "nothing_like_it", "-m", "pycodestyle", "bad.py"],
               tmp_path)
    assert "→ _main()" not in done.stderr
    assert done.stderr.count("flowtrace-otel: no calls recorded:") == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("import re\nimport sys\nfrom pycodestyle import _main\nif __name__ == '__main__':\n"
     "    sys.exit(_main())\n", ["pycodestyle"]),
    ("import sys\nfrom black.cli import patched_main\nsys.exit(patched_main())\n", ["black"]),
    ("from os import path\nprint(path.sep)\n", []),                      # stdlib only
    ("from mylib import helper\ndef main():\n    helper()\nmain()\n", []),  # a program
])
def test_launchers_are_told_from_programs(text: str, expected: list[str],
                                          tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text(text)
    assert cli._launched_modules(str(script)) == expected


def test_a_script_in_a_package_brings_its_package(tmp_path: Path) -> None:
    package = tmp_path / "outer" / "inner"
    package.mkdir(parents=True)
    for folder in (tmp_path / "outer", package):
        (folder / "__init__.py").write_text("")
    (package / "tool.py").write_text("")
    assert cli.program_paths(None, str(package / "tool.py"))[0] == str(tmp_path / "outer")


# --- empty is never silent ------------------------------------------------------------------------

ONLY_LIBRARIES = "import json\nprint(json.dumps({'a': [1]}))\n"


@pytest.mark.parametrize(("options", "source", "line"), [
    ([], ONLY_LIBRARIES,
     "flowtrace-otel: no calls recorded: every function that ran is in the standard library "
     "(only your code is traced); use --include 'json' to trace that package"),
    (["--exclude", "*/prog.py"], PROGRAM,
     "flowtrace-otel: no calls recorded: every function of your code that ran matched "
     "exclude '*/prog.py'"),
    (["--include", "elsewhere"], PROGRAM,
     "flowtrace-otel: no calls recorded: no function that ran matched include 'elsewhere'; a "
     "pattern is a module glob ('myapp', 'myapp.*') or a path glob ('src/*.py')"),
    ([], "print('only module-level code')\n",
     "flowtrace-otel: no calls recorded: no function of your code ran while tracing "
     "(module-level code is not a call: put the work in a function)"),
])
def test_an_empty_run_says_why_in_one_line(options: list[str], source: str, line: str,
                                           tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(source)
    plain = run([sys.executable, "prog.py"], tmp_path)
    done = run([CONSOLE, "run", *options, "prog.py"], tmp_path)
    assert (done.returncode, done.stdout) == (plain.returncode, plain.stdout)
    assert done.stderr.splitlines() == [line]


def test_an_empty_exported_run_says_why(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(ONLY_LIBRARIES)
    with OtlpReceiver(grpc=False) as receiver:
        done = run([CONSOLE, "run", "prog.py"], tmp_path, **receiver.env())
    assert done.returncode == 0
    assert [line for line in done.stderr.splitlines() if "no calls recorded" in line] == [
        "flowtrace-otel: no calls recorded: every function that ran is in the standard library "
        "(only your code is traced); use --include 'json' to trace that package"]


def test_a_run_with_calls_adds_no_line(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(PROGRAM)
    done = run([CONSOLE, "run", "prog.py"], tmp_path)
    assert "no calls recorded" not in done.stderr


def test_an_empty_session_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    start_tracing()
    json.dumps([1])
    assert stop_tracing() == []
    assert capsys.readouterr().err.splitlines() == [
        "flowtrace_otel: no calls recorded: every function that ran is in the standard library "
        "(only your code is traced); use include=('json',) to trace that package"]
    with TraceSession():
        os.path.join("a", "b")
    assert capsys.readouterr().err.count("no calls recorded") == 1


def test_a_session_with_calls_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with TraceSession() as session:
        help_options.__name__.upper()
        run_actions.__doc__.strip()  # type: ignore[union-attr]
        a_value.__name__.lower()
        test_a_session_with_calls_says_nothing.__name__.title()
        _user_call()
    assert [e.func_name for e in session.events] == ["_user_call"]
    assert capsys.readouterr().err == ""


def _user_call() -> int:
    return 1


FLAME = """
def parse(x):
    return x * 2

def load(n):
    return [parse(i) for i in range(n)]

def main():
    return load(3)

main()
"""


@pytest.mark.parametrize("otel", [False, True], ids=["tree", "otel"])
def test_flamegraph_and_perfetto_files_are_written(tmp_path: Path, otel: bool) -> None:
    """--flamegraph and --perfetto write parseable files, in tree mode and beside --otel."""
    (tmp_path / "prog.py").write_text(FLAME)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWTRACE", "OTEL_"))}
    cmd = [sys.executable, "-m", "flowtrace_otel", "run", "--flamegraph", "out.folded",
           "--perfetto", "out.json", *(["--otel"] if otel else []), "prog.py"]
    if otel:
        env["OTEL_TRACES_EXPORTER"] = "none"
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    stacks = {line.rsplit(" ", 1)[0] for line in
              (tmp_path / "out.folded").read_text().splitlines()}
    assert {"main", "main;load", "main;load;parse"} <= stacks
    timeline = json.loads((tmp_path / "out.json").read_text())
    slices = [e["name"] for e in timeline["traceEvents"] if e["ph"] == "X"]
    assert sorted(slices) == ["load", "main", "parse", "parse", "parse"]
