"""``file:line`` links on tree lines (issue 14, item 5): plain text or OSC 8 hyperlinks.

The defaults are checked where they matter, on the real command line: with stderr on a
pseudo-terminal (the ``pty`` module) links are on, and piped they are off unless asked.
"""

from __future__ import annotations

import io
import os
import pty
import socket
import subprocess
from pathlib import Path

import pytest

from flowtrace_otel import TraceSession, format_tree, print_tree
from flowtrace_otel.links import OFF, OSC8, PLAIN, style_for, terminal_has_hyperlinks
from tests._programs import PY, clean_env, write

HERE = Path(__file__).resolve()


def add(a, b):
    return a + b


def main():
    return add(1, 2) + add(3, 4)


def fails():
    raise ValueError("first line\nsecond line")


ADD_LINE = add.__code__.co_firstlineno
MAIN_LINE = main.__code__.co_firstlineno


@pytest.fixture()
def events(monkeypatch: pytest.MonkeyPatch):
    """The calls of ``main()``, with the repository as the current folder."""
    monkeypatch.chdir(HERE.parent.parent)
    with TraceSession() as session:
        main()
    return session.events


def test_plain_links_are_paths_relative_to_the_current_folder(events) -> None:
    """Each call's first line ends with ``path:line``; closing lines have none."""
    text = format_tree(events, show_timing=False, links=True)
    assert text == (
        f"→ main() tests/test_links.py:{MAIN_LINE}\n"
        f"  → add(1, 2) tests/test_links.py:{ADD_LINE}\n"
        f"  → add(3, 4) tests/test_links.py:{ADD_LINE}\n"
        "← main()\n")
    assert format_tree(events, show_timing=False, links="plain") == text
    assert "test_links.py" not in format_tree(events, show_timing=False)


def test_a_file_outside_the_current_folder_is_shown_whole(events, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = format_tree(events, show_timing=False, links=True)
    assert f"→ add(1, 2) {HERE}:{ADD_LINE}\n" in text


def test_osc8_hyperlinks_show_file_line_and_open_the_file_at_the_line(events) -> None:
    """``ESC]8;;file://HOST/PATH#LINE ESC\\ text ESC]8;; ESC\\``, the text being ``file:line``."""
    text = format_tree(events, show_timing=False, links="osc8")
    url = f"file://{socket.gethostname()}{HERE}#{ADD_LINE}"
    link = f"\033]8;;{url}\033\\tests/test_links.py:{ADD_LINE}\033]8;;\033\\"
    assert f"  → add(1, 2) {link}\n" in text
    assert text.count("\033]8;;file://") == 3


def test_osc8_urls_are_percent_encoded(tmp_path: Path) -> None:
    """A path with spaces or non-ASCII letters still makes a valid URL."""
    folder = tmp_path / "my code é"
    folder.mkdir()
    script = write(folder, "def f():\n    return 1\n\nf()\n", "prog.py")
    with TraceSession() as session:
        exec(compile(script.read_text(), str(script), "exec"), {"__name__": "__main__"})
    text = format_tree(session.events, show_timing=False, links="osc8")
    assert "/my%20code%20%C3%A9/prog.py#1\033\\prog.py:1" in text, repr(text)


def test_code_without_a_file_has_no_link() -> None:
    namespace = {"__name__": "__main__"}
    exec("def typed():\n    return 1\n", namespace)
    with TraceSession() as session:
        namespace["typed"]()
    assert format_tree(session.events, show_timing=False, links=True) == "→ typed()\n"


def test_folded_lines_link_to_the_function(events) -> None:
    def loop():
        return [add(i, i) for i in range(8)]

    with TraceSession() as session:
        loop()
    text = format_tree(session.events, show_timing=False, links=True, fold_after=2)
    assert f"  → add(…) ×6 folded tests/test_links.py:{ADD_LINE}\n" in text


def test_a_multi_line_exception_message_keeps_the_tree_one_line_per_call() -> None:
    with TraceSession() as session:
        try:
            fails()
        except ValueError:
            pass
    text = format_tree(session.events, show_timing=False)
    assert text == "→ fails() raised ValueError: first line … [propagated]\n"


def test_bad_links_value() -> None:
    with pytest.raises(ValueError, match="links must be"):
        format_tree([], links="html")


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("tty", "links", "env", "style"), [
    (False, None, {"FORCE_HYPERLINK": "1"}, OFF),        # piped: off by default
    (False, True, {"FORCE_HYPERLINK": "1"}, PLAIN),      # asked: plain text in a file
    (True, None, {"TERM": "xterm"}, PLAIN),              # a terminal not known for OSC 8
    (True, None, {"TERM_PROGRAM": "WezTerm"}, OSC8),
    (True, None, {"TERM_PROGRAM": "WezTerm", "NO_COLOR": "1"}, PLAIN),
    (True, False, {"TERM_PROGRAM": "WezTerm"}, OFF),
    (True, True, {"FORCE_HYPERLINK": "1"}, OSC8),
])
def test_style_for_a_stream(tty: bool, links: bool | None, env: dict[str, str],
                            style: str) -> None:
    stream = FakeTerminal() if tty else io.StringIO()
    assert style_for(stream, links, env) == style


@pytest.mark.parametrize(("env", "shown"), [
    ({}, False), ({"TERM": "xterm-256color"}, False), ({"TERM": "dumb"}, False),
    ({"TERM": "xterm-kitty"}, True), ({"TERM_PROGRAM": "vscode"}, True),
    ({"TERM_PROGRAM": "iTerm.app"}, True), ({"WT_SESSION": "x"}, True),
    ({"VTE_VERSION": "6800"}, True), ({"VTE_VERSION": "4200"}, False),
    ({"FORCE_HYPERLINK": "1", "TERM": "dumb"}, True),
    ({"FORCE_HYPERLINK": "0", "TERM_PROGRAM": "vscode"}, False),
])
def test_terminals_known_to_show_hyperlinks(env: dict[str, str], shown: bool) -> None:
    assert terminal_has_hyperlinks(env) is shown


def test_print_tree_is_plain_in_a_file_by_default(events, monkeypatch: pytest.MonkeyPatch) -> None:
    """print_tree to a file or pipe adds nothing unless asked."""
    monkeypatch.setenv("FORCE_HYPERLINK", "1")
    out = io.StringIO()
    print_tree(events, file=out, show_timing=False)
    assert out.getvalue() == format_tree(events, show_timing=False)
    asked = io.StringIO()
    print_tree(events, file=asked, show_timing=False, links=True)
    assert asked.getvalue() == format_tree(events, show_timing=False, links=True)


def test_print_tree_on_a_terminal(events, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_HYPERLINK", "1")
    out = FakeTerminal()
    print_tree(events, file=out, show_timing=False)
    assert out.getvalue().count("\033]8;;file://") == 3


# --- the command line, on a pseudo-terminal and piped ----------------------------------------

PROGRAM = """\
def add(a, b):
    return a + b


def main():
    return add(1, 2) + add(3, 4)


print(main())
"""

_TERMINAL_VARS = ("TERM", "TERM_PROGRAM", "VTE_VERSION", "WT_SESSION", "KONSOLE_VERSION",
                  "DOMTERM", "FORCE_HYPERLINK", "NO_COLOR")


def terminal_env(**extra: str) -> dict[str, str]:
    """A clean environment describing only the terminal given in ``extra``."""
    env = {k: v for k, v in clean_env().items() if k not in _TERMINAL_VARS}
    env.update(extra)
    return env


def run_on_a_terminal(folder: Path, options: list[str], env: dict[str, str]) -> str:
    """``flowtrace-otel run OPTIONS prog.py`` with stderr on a pseudo-terminal; its stderr."""
    leader, follower = pty.openpty()
    with subprocess.Popen([PY, "-m", "flowtrace_otel", "run", *options, "prog.py"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
                          env=env, cwd=folder) as process:
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the program closed its end
                break
            if not data:
                break
            chunks.append(data)
        os.close(leader)
        assert process.wait(timeout=120) == 0
    return b"".join(chunks).decode()


@pytest.fixture()
def program(tmp_path: Path) -> Path:
    write(tmp_path, PROGRAM)
    return tmp_path


def test_on_a_terminal_links_are_hyperlinks(program: Path) -> None:
    err = run_on_a_terminal(program, ["--no-timing"], terminal_env(TERM_PROGRAM="WezTerm"))
    url = f"file://{socket.gethostname()}{program.resolve()}/prog.py#1"
    assert f"\033]8;;{url}\033\\prog.py:1\033]8;;\033\\" in err, repr(err)
    assert err.count("\033]8;;file://") == 3


def test_on_another_terminal_links_are_plain_text(program: Path) -> None:
    err = run_on_a_terminal(program, ["--no-timing"], terminal_env(TERM="xterm"))
    assert "\033]8" not in err
    assert "add\033[0m(1, 2) \033[2mprog.py:1\033[0m\r\n" in err, repr(err)


def test_no_color_means_no_escape_sequences(program: Path) -> None:
    err = run_on_a_terminal(program, ["--no-timing"],
                            terminal_env(NO_COLOR="1", FORCE_HYPERLINK="1"))
    assert err == "→ main() prog.py:5\r\n  → add(1, 2) prog.py:1\r\n  → add(3, 4) prog.py:1\r\n" \
                  "← main()\r\n"


def test_no_links_on_a_terminal(program: Path) -> None:
    err = run_on_a_terminal(program, ["--no-timing", "--no-links"],
                            terminal_env(NO_COLOR="1", FORCE_HYPERLINK="1"))
    assert err == "→ main()\r\n  → add(1, 2)\r\n  → add(3, 4)\r\n← main()\r\n"


def test_piped_output_has_no_links_unless_asked(program: Path) -> None:
    def piped(*options: str) -> str:
        done = subprocess.run([PY, "-m", "flowtrace_otel", "run", "--no-timing", *options,
                               "prog.py"], capture_output=True, text=True, cwd=program,
                              env=terminal_env(TERM_PROGRAM="WezTerm"), timeout=120,
                              check=True)
        assert done.stdout == "10\n"
        return done.stderr

    assert piped() == "→ main()\n  → add(1, 2)\n  → add(3, 4)\n← main()\n"
    assert piped("--links") == (
        "→ main() prog.py:5\n  → add(1, 2) prog.py:1\n  → add(3, 4) prog.py:1\n← main()\n")
