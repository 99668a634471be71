"""``flowtrace-otel run``: the program runs exactly as under python; the tree goes to stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import masked

TESTS = Path(__file__).resolve().parent
SCRIPT = "samples/cli_prog.py"
MODULE = "samples.cli_prog"
CONSOLE = str(Path(sys.executable).parent / "flowtrace-otel")
LAUNCHERS = {
    "console-script": [CONSOLE, "run"],
    "python-m": [sys.executable, "-m", "flowtrace_otel", "run"],
}


def clean_env() -> dict[str, str]:
    """The environment without tracer, OTel or colour settings."""
    return {k: v for k, v in os.environ.items()
            if k == "FLOWTRACE_OTEL_CORE"  # the core under test
            or (not k.startswith(("FLOWTRACE_OTEL", "OTEL_")) and k != "NO_COLOR")}


def run(cmd: list[str], cwd: Path = TESTS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=clean_env(),
                          timeout=60, check=False)


def split_tree(stderr: str) -> tuple[str, str]:
    """(what the program wrote to stderr, the tree after it)."""
    index = stderr.find("→ main(")
    assert index >= 0, stderr
    return stderr[:index], stderr[index:]


def without_runpy(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if '"<frozen runpy>"' not in line)


CASES = {
    "ok": ["world"], "exit3": ["world", "--exit3"], "exit-text": ["--exit-text"],
    "uncaught": ["x", "--boom"], "our-option-names": ["--json", "not-ours.json", "--help", "-m"],
}
MATRIX = [(launcher, case, as_module)
          for launcher in LAUNCHERS for case in CASES for as_module in (False, True)
          if launcher == "console-script" or case in ("ok", "uncaught")]


@pytest.mark.parametrize(("launcher", "case", "as_module"), MATRIX,
                         ids=[f"{a}-{b}-{'module' if c else 'script'}" for a, b, c in MATRIX])
def test_program_runs_as_under_python(launcher, case, as_module) -> None:
    program_args = CASES[case]
    target = ["-m", MODULE] if as_module else [SCRIPT]
    plain = run([sys.executable, *target, *program_args])
    traced = run([*LAUNCHERS[launcher], *target, *program_args])
    assert traced.returncode == plain.returncode
    assert traced.stdout == plain.stdout
    assert "hello" in traced.stdout and "pickle Point" in traced.stdout
    program_err, tree = split_tree(traced.stderr)
    assert program_err == without_runpy(plain.stderr)  # same traceback, minus runpy frames
    assert "flowtrace_otel" not in program_err and "runpy" not in program_err
    assert not (TESTS / "not-ours.json").exists()
    tree = masked(tree)
    assert tree.startswith("→ main([")
    assert f"  → greet({program_args[0]!r}) [..s]" in tree


def test_a_program_that_traces_itself_nests_inside_the_run(tmp_path: Path) -> None:
    seed = tmp_path / "seed.py"
    seed.write_text("from flowtrace_otel import start_tracing, stop_tracing\n"
                    "from flowtrace_otel.formatters import print_tree\n\n"
                    "def fib(n):\n    return n if n <= 1 else fib(n-1) + fib(n-2)\n\n"
                    "start_tracing()\nfib(3)\nevents = stop_tracing()\nprint_tree(events)\n")
    done = run([CONSOLE, "run", str(seed)], cwd=tmp_path)
    assert done.returncode == 0
    assert masked(done.stdout) == masked(done.stderr)  # its own tree, and the run's tree
    assert masked(done.stdout).splitlines()[0::6] == ["→ fib(3)", "← fib(3) [..s]"]


def test_exit_codes() -> None:
    for args, code in ((["a"], 0), (["--exit3"], 3), (["--boom"], 1), (["--exit-text"], 1)):
        assert run([CONSOLE, "run", SCRIPT, *args]).returncode == code


def test_uncaught_exception_traceback_is_the_programs() -> None:
    done = run([CONSOLE, "run", SCRIPT, "--boom"])
    program_err, tree = split_tree(done.stderr)
    assert program_err.startswith("Traceback (most recent call last):\n")
    frames = re.findall(r'File "([^"]+)"', program_err)
    assert frames and all(frame.endswith("cli_prog.py") for frame in frames)
    assert program_err.rstrip().endswith("RuntimeError: boom")
    assert "raised RuntimeError: boom [propagated]" in tree


def test_syntax_error_is_reported_as_python_does(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('print("hi")\nx = (\n')
    plain = run([sys.executable, str(bad)], cwd=tmp_path)
    traced = run([CONSOLE, "run", str(bad)], cwd=tmp_path)
    assert (traced.returncode, traced.stdout, traced.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)
    assert "SyntaxError" in traced.stderr


@pytest.mark.skipif(os.name != "posix", reason="python dies of SIGINT only on POSIX")
def test_keyboard_interrupt_ends_the_process_as_python_does() -> None:
    plain = run([sys.executable, SCRIPT, "--interrupt"])
    traced = run([CONSOLE, "run", SCRIPT, "--interrupt"])
    assert plain.returncode == traced.returncode == -2
    assert split_tree(traced.stderr)[0] == plain.stderr


def test_tree_goes_to_stderr_after_the_program() -> None:
    done = run([CONSOLE, "run", SCRIPT, "ann"])
    assert "→" not in done.stdout
    assert masked(done.stderr) == (
        "→ main(['samples/cli_prog.py', 'ann'])\n"
        "  → greet('ann') [..s]\n"
        "← main(['samples/cli_prog.py', 'ann']) [..s]\n"
    )


def test_tree_reaches_stderr_even_if_the_program_replaces_sys_stderr() -> None:
    done = run([CONSOLE, "run", SCRIPT, "--swallow-stderr"])
    assert done.returncode == 0
    assert "→ greet('--swallow-stderr')" in done.stderr


def test_non_daemon_threads_finish_inside_the_trace() -> None:
    done = run([CONSOLE, "run", SCRIPT, "--thread"])
    assert done.returncode == 0
    assert "→ late(21) {thread straggler}" in done.stderr


def stderr_on_a_terminal(extra_env: dict[str, str]) -> str:
    """Run the CLI with stderr on a pseudo-terminal and return what the terminal got."""
    import pty
    import select

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([CONSOLE, "run", SCRIPT, "tty"], cwd=TESTS,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=slave, env={**clean_env(), **extra_env})
        os.close(slave)
        chunks = []
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    return b"".join(chunks).decode()


@pytest.mark.skipif(os.name != "posix", reason="needs a pseudo-terminal")
def test_colour_on_a_terminal_unless_no_color() -> None:
    coloured = stderr_on_a_terminal({})
    assert "\033[1mgreet\033[0m" in coloured
    plain = stderr_on_a_terminal({"NO_COLOR": "1"})
    assert "\033[" not in plain and "→ greet('tty')" in plain


def test_executor_left_open_does_not_hang(tmp_path: Path) -> None:
    prog = tmp_path / "pool.py"
    prog.write_text("from concurrent.futures import ThreadPoolExecutor\n"
                    "def work(x):\n    return x * 2\n"
                    "pool = ThreadPoolExecutor(2)\n"
                    "print(pool.submit(work, 21).result())\n")
    done = run([CONSOLE, "run", str(prog)], cwd=tmp_path)  # python itself ends such a pool
    assert (done.returncode, done.stdout) == (0, "42\n")
    assert "→ work(21) {thread ThreadPoolExecutor-0_0}" in done.stderr


def test_json_file(tmp_path: Path) -> None:
    out = tmp_path / "events.json"
    done = run([CONSOLE, "run", "--json", str(out), SCRIPT, "bob"])
    assert done.returncode == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [d["func_name"] for d in data] == ["main", "greet"]
    assert data[1]["parent_id"] == data[0]["id"]
    assert data[1]["args_repr"] == "'bob'" and data[1]["result_repr"] == "'hello bob'"
    assert data[1]["module"] == "__main__"
    assert "→ main(" in done.stderr  # the tree is printed as well


def test_json_file_that_cannot_be_written_keeps_the_exit_code(tmp_path: Path) -> None:
    done = run([CONSOLE, "run", "--json", str(tmp_path / "no" / "dir.json"), SCRIPT, "--exit3"])
    assert done.returncode == 3
    assert "flowtrace-otel: cannot write" in done.stderr


def test_display_and_capture_options() -> None:
    done = run([CONSOLE, "run", "--show-result", "--no-timing", SCRIPT, "z"])
    assert "  → greet('z') → 'hello z'" in done.stderr.splitlines()
    assert "s]" not in done.stderr
    done = run([CONSOLE, "run", "--no-args", "--no-result", "--show-result", SCRIPT, "z"])
    assert "  → greet()" in masked(done.stderr)
    done = run([CONSOLE, "run", "--max-repr", "6", SCRIPT, "abcdefghij"])
    assert "→ greet('abcd…)" in done.stderr  # 6 characters in all


def test_filter_options() -> None:
    done = run([CONSOLE, "run", "--exclude", "*/cli_prog.py", SCRIPT])
    assert (done.returncode, done.stderr) == (0, (
        "flowtrace-otel: no calls recorded: every function of your code that ran matched "
        "exclude '*/cli_prog.py'\n"))
    done = run([CONSOLE, "run", "--include", "samples.shapes", SCRIPT])
    assert done.stderr.startswith("flowtrace-otel: no calls recorded: no function that ran "
                                  "matched include 'samples.shapes'")
    assert len(done.stderr.splitlines()) == 1


def test_max_lines() -> None:
    done = run([CONSOLE, "run", "--max-lines", "1", SCRIPT])
    assert "→ main(" in done.stderr and "→ greet" not in done.stderr
    # the cut is marked where it is, inside main, before main's closing line
    assert "\n  … 1 more call not shown (max_lines): greet() ×1\n← main(" in done.stderr


def test_environment_filters_apply() -> None:
    env = {**clean_env(), "FLOWTRACE_OTEL_EXCLUDE": "__main__"}
    done = subprocess.run([CONSOLE, "run", SCRIPT], capture_output=True, text=True, cwd=TESTS,
                          env=env, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, (
        "flowtrace-otel: no calls recorded: every function of your code that ran matched "
        "exclude '__main__'\n"))


def test_help_explains_everything() -> None:
    done = run([CONSOLE, "run", "--help"])
    assert done.returncode == 0
    for word in ("-m MODULE", "--include", "--exclude", "--no-args", "--no-result", "--max-repr",
                 "--max-items", "--full-repr", "--show-result", "--no-timing", "--max-lines",
                 "--json", "--otel", "stderr", "FLOWTRACE_OTEL_INCLUDE", "FLOWTRACE_OTEL_EXCLUDE",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "NO_COLOR", "exit code"):
        assert word in done.stdout, word
    top = run([CONSOLE, "--help"])
    assert top.returncode == 0 and "run" in top.stdout
    version = run([sys.executable, "-m", "flowtrace_otel", "--version"])
    assert version.returncode == 0 and version.stdout.startswith("flowtrace-otel 0.")


@pytest.mark.parametrize(("args", "code", "message"), [
    ([], 2, "the following arguments are required"),
    (["run"], 2, "run needs a script or -m MODULE"),
    (["run", "--bogus", SCRIPT], 2, "--bogus"),
    (["run", "--max-repr", "many", SCRIPT], 2, "invalid count: 'many'"),
    (["run", "--max-lines", "-1", SCRIPT], 2, "must be 0 or more"),
    (["run", "missing.py"], 2, "can't open file"),
    (["run", "-m", "no_such_module_here"], 1, "No module named no_such_module_here"),
    (["walk", SCRIPT], 2, "invalid choice"),
])
def test_bad_command_lines(args, code, message) -> None:
    done = run([CONSOLE, *args])
    assert done.returncode == code
    assert message in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_tool_ids_taken_is_a_clear_error_before_the_program_runs() -> None:
    code = ("import sys\n"
            "sys.monitoring.use_tool_id(3, 'debugger-x'); sys.monitoring.use_tool_id(4, 'prof-y')\n"
            "from flowtrace_otel.cli import main\n"
            f"raise SystemExit(main(['run', {SCRIPT!r}]))\n")
    done = run([sys.executable, "-c", code])
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("flowtrace-otel: cannot trace: ")
    assert "'debugger-x'" in done.stderr and "'prof-y'" in done.stderr
    assert "Traceback" not in done.stderr


def test_in_process_main_restores_argv_and_path(monkeypatch, capsys) -> None:
    from flowtrace_otel.cli import main

    monkeypatch.chdir(TESTS)
    argv, path = list(sys.argv), list(sys.path)
    assert main(["run", SCRIPT, "inproc", "--exit3"]) == 3
    assert sys.argv == argv and sys.path == path
    captured = capsys.readouterr()
    assert "hello inproc" in captured.out and "→ greet('inproc')" in captured.err
