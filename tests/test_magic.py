"""``%load_ext flowtrace_otel``: the ``%%flowtrace`` and ``%flowtrace`` magics in real IPython.

IPython runs in a subprocess reading its input from stdin, as a person typing would (at the
simple prompt a cell magic ends with two blank lines, as every cell magic does there).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from flowtrace_otel import cli, magic
from flowtrace_otel.testing import OtlpReceiver

IPYTHON = [sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=NoColor",
           "--HistoryManager.enabled=False"]

FIB = ["%load_ext flowtrace_otel",
       "def fib(n):", "    return n if n <= 1 else fib(n - 1) + fib(n - 2)", "",
       "def f(n):", "    raise ValueError(n)", ""]

FIB_TREE = """\
→ fib(3)
  → fib(2)
    → fib(1)
    → fib(0)
  ← fib(2)
  → fib(1)
← fib(3)
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without tracer, OTel or coverage settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k == "FLOWTRACE_OTEL_CORE"  # the core under test
           or not k.startswith(("FLOWTRACE_OTEL", "OTEL_", "COVERAGE_", "PYTEST_"))}
    env.update(PYTHONIOENCODING="utf-8", NO_COLOR="1", **extra)
    return env


def ipython(lines: list[str], cwd: Path, **env: str) -> str:
    """Type ``lines`` into IPython; what it printed (stdout and stderr together)."""
    done = subprocess.run(IPYTHON, input="\n".join(lines) + "\n", cwd=cwd,
                          env=clean_env(IPYTHONDIR=str(cwd / ".ipython"), **env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout
    return done.stdout.replace("   ...: ", "")


def prompt_outputs(output: str) -> dict[int, str]:
    """What each ``In [n]:`` prompt's cell printed, by n."""
    parts = re.split(r"\nIn \[(\d+)\]: ", "\n" + output)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_importing_the_package_never_imports_ipython() -> None:
    code = ("import sys, flowtrace_otel, flowtrace_otel.html, flowtrace_otel.cli\n"
            "assert callable(flowtrace_otel.load_ipython_extension)\n"
            "assert callable(flowtrace_otel.unload_ipython_extension)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'IPython'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), timeout=60)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_a_traced_cell_prints_its_tree_and_keeps_its_value(tmp_path: Path) -> None:
    output = ipython([*FIB, "%%flowtrace --no-timing", "x = fib(3)", "fib(1)", "", "",
                      "print('x is', x)"], tmp_path)
    cells = prompt_outputs(output)
    assert cells[4] == "Out[4]: 1\n" + FIB_TREE + "→ fib(1)\n"  # the value, then the tree
    assert cells[5].startswith("x is 2\n")  # the cell's own names stay


def test_a_failing_cell_shows_the_traceback_it_shows_untraced(tmp_path: Path) -> None:
    """Same frames, same lines; the error ends the cell; the tree says where it went."""
    untraced_cell = "# untraced\\nfib(2)\\nf(2)\\n\\n"  # the cell as typed, without the magic
    output = ipython([*FIB, "%%flowtrace --no-timing", "fib(2)", "f(2)", "", "",
                      f"_ = get_ipython().run_cell('{untraced_cell}')", "print('alive')"],
                     tmp_path)
    cells = prompt_outputs(output)
    traced, untraced = cells[4], cells[5]
    tree = "→ fib(2)\n  → fib(1)\n  → fib(0)\n← fib(2)\n→ f(2) raised ValueError: 2 [propagated]\n"
    assert traced.endswith("ValueError: 2\n" + tree)
    traced_tb = traced.removesuffix(tree).replace("%%flowtrace --no-timing", "# untraced")
    def numbered(text: str) -> str:
        """Without the cell numbers and the blank lines shown after the failing line."""
        text = re.sub(r"^ +\d+ $\n", "", text, flags=re.M)  # line 1 is not Python: no trim
        return re.sub(r"Cell In\[[456]\]", "Cell In[N]", text).rstrip("\n")

    assert numbered(traced_tb) == numbered(untraced)
    assert "----> 3 f(2)" in traced_tb and "flowtrace_otel" not in traced_tb
    assert cells[6].startswith("alive")


def test_the_line_magic_returns_the_value_and_propagates_the_exception(tmp_path: Path) -> None:
    output = ipython([*FIB, "%flowtrace --no-timing --show-result fib(2)", "print('got', _)",
                      "if True:", "    %flowtrace --no-timing f(3)", "    print('not reached')",
                      "", "print('alive')"], tmp_path)
    cells = prompt_outputs(output)
    assert cells[4] == "→ fib(2)\n  → fib(1) → 1\n  → fib(0) → 0\n← fib(2) → 1\nOut[4]: 1\n"
    assert cells[5].startswith("got 1\n")
    assert cells[6].startswith("→ f(3) raised ValueError: 3 [propagated]\n")
    assert "ValueError: 3" in cells[6]
    assert re.search("^not reached", output, re.M) is None
    assert cells[7].startswith("alive")


def test_options_files_and_empty_cells(tmp_path: Path) -> None:
    output = ipython([*FIB,
                      "%%flowtrace --no-timing --flamegraph s.folded --html p.html --json e.json",
                      "fib(2)", "", "",
                      "%%flowtrace --no-timing --exclude __main__", "fib(2)", "", "",
                      "%%flowtrace --bogus", "fib(2)", "", "",
                      "%flowtrace --help"], tmp_path)
    cells = prompt_outputs(output)
    stacks = {line.rsplit(" ", 1)[0] for line in (tmp_path / "s.folded").read_text().splitlines()}
    assert "fib" in stacks and stacks <= {"fib", "fib;fib"}
    page = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert "<title>%%flowtrace: In [4]</title>" in page and page.count(">fib</span>") == 3
    assert '"func_name": "fib"' in (tmp_path / "e.json").read_text()
    assert cells[5] == ("Out[5]: 1\n%%flowtrace: no calls recorded: every function of your code "
                        "that ran matched exclude '__main__'\n")
    assert cells[6].startswith("UsageError: %flowtrace: unrecognized arguments: --bogus")
    assert "Out[6]" not in cells[6]  # the cell did not run
    for option in cli.valued_options(cli.build_parser()) - {"-m"}:
        assert option in cells[7]  # the help lists the CLI's options


def test_the_magic_takes_every_run_option_but_the_program() -> None:
    run = cli._subparser(cli.build_parser(), "run")
    ours = {a.dest for a in magic.build_parser()._actions}
    theirs = {a.dest for a in run._actions}
    assert ours == theirs - {"module", "target", "args"}


def test_the_line_is_split_into_options_and_statement() -> None:
    valued = magic.valued_options(magic.build_parser())
    assert magic.split_line("--include 'my app' --show-result f(-1, '--x')", valued) == (
        ["--include", "my app", "--show-result"], "f(-1, '--x')")
    assert magic.split_line("-- -x", valued) == ([], "-x")
    assert magic.split_line("f()", valued) == ([], "f()")


def test_with_an_endpoint_the_cell_is_exported_and_linked(tmp_path: Path) -> None:
    with OtlpReceiver(grpc=False) as receiver:
        output = ipython([*FIB, "%%flowtrace --no-timing", "fib(2)", "fib(1)", "", ""],
                         tmp_path, **receiver.env())
        spans = receiver.wait_for_spans(4)
    cells = prompt_outputs(output)
    assert cells[4].startswith("Out[4]: 1\n→ fib(2)\n")
    shown = re.findall(r"flowtrace-otel: trace ([0-9a-f]{32})  http://localhost:16686/trace/\1",
                       cells[4])
    assert sorted(shown) == sorted({span["trace_id"] for span in spans})
    assert len(shown) == 2 and sorted(span["name"] for span in spans).count("fib") == 4


def test_under_flowtrace_otel_1_the_links_are_the_cells_traces(tmp_path: Path) -> None:
    """The start-up bridge exports everything; the magic shows the traces of its own cell."""
    with OtlpReceiver(grpc=False) as receiver:
        output = ipython([*FIB, "fib(1)", "%%flowtrace --no-timing", "fib(2)", "", ""],
                         tmp_path, FLOWTRACE_OTEL="1", **receiver.env())
        spans = receiver.wait_for_spans(4)
    cells = prompt_outputs(output)
    shown = re.findall(r"flowtrace-otel: trace ([0-9a-f]{32})", cells[5])
    sizes: dict[str, int] = {}
    for span in spans:
        sizes[span["trace_id"]] = sizes.get(span["trace_id"], 0) + 1
    assert sorted(sizes.values()) == [1, 3]  # fib(1) in cell 4, fib(2) in cell 5
    assert shown == [trace for trace, size in sizes.items() if size == 3]
    assert "flowtrace-otel: trace" not in cells[4]


NOTEBOOK_RUNNER = """\
import sys
import nbformat
from nbclient import NotebookClient

cells = [
    "%load_ext flowtrace_otel",
    "def fib(n):\\n    return n if n <= 1 else fib(n - 1) + fib(n - 2)\\n\\n"
    "def f(n, note):\\n    raise ValueError(n)",
    "%%flowtrace --no-timing\\nfib(3)",
    "%%flowtrace --no-timing\\nf(2, '<script>alert(1)</script>')",
    "%%flowtrace\\nx = 1\\nx",
]
nb = nbformat.v4.new_notebook()
nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
nb.cells[3].metadata["tags"] = ["raises-exception"]
NotebookClient(nb, timeout=120, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[1]}}).execute()
nbformat.write(nb, sys.argv[2])
"""


def test_a_notebook_cell_displays_the_tree_as_html_with_a_text_fallback(tmp_path: Path) -> None:
    """A real kernel runs the notebook (nbclient); the outputs are what Jupyter shows."""
    import json

    (tmp_path / "run.py").write_text(NOTEBOOK_RUNNER)
    done = subprocess.run([sys.executable, "run.py", str(tmp_path), "out.ipynb"], cwd=tmp_path,
                          env=clean_env(JUPYTER_PLATFORM_DIRS="1"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cells = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    fib_outputs = cells[2]["outputs"]
    assert [o["output_type"] for o in fib_outputs] == ["execute_result", "display_data"]
    assert "".join(fib_outputs[0]["data"]["text/plain"]) == "2"  # Out[3], as untraced
    shown = fib_outputs[1]["data"]
    assert "".join(shown["text/plain"]) == FIB_TREE.rstrip("\n")  # IPython trims the end
    page = "".join(shown["text/html"])
    assert page.startswith('<div class="flowtrace-otel"><style>')
    assert page.count('<details class="ft-node" open><summary>') == 2  # fib(3), fib(2)
    assert page.count(">fib</span>(<span class=\"ft-args\">") == 5
    assert '<span class="ft-res">→ 2</span>' in page  # results show in HTML
    failed = cells[3]["outputs"]
    assert [o["output_type"] for o in failed] == ["error", "display_data"]
    assert (failed[0]["ename"], failed[0]["evalue"]) == ("ValueError", "2")
    assert "flowtrace_otel" not in "".join(failed[0]["traceback"])
    tree = failed[1]["data"]
    assert "".join(tree["text/plain"]) == (
        "→ f(2, '<script>alert(1)</script>') raised ValueError: 2 [propagated]")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in "".join(tree["text/html"])
    assert "<script>" not in "".join(tree["text/html"])
    empty = cells[4]["outputs"]
    assert [o["output_type"] for o in empty] == ["execute_result", "display_data"]
    assert "".join(empty[1]["data"]["text/plain"]) == (  # not the kernel's own calls
        "%%flowtrace: no calls recorded: no function of your code ran while tracing "
        "(module-level code is not a call: put the work in a function)")
