"""Run the native scenarios under valgrind and fail on any memory error or leak in our C code.

Usage: python .ci/native_memcheck.py   (the interpreter whose editable install has the C core)

What fails the run:
* any memory error (invalid read/write/free, use of uninitialised memory...), wherever it is,
  but for CPython's own known ones, each suppressed in .ci/cpython.supp with its evidence;
* any block "definitely lost" whose allocation stack passes through flowtrace_otel._native,
  except the two kinds of blocks whose owner is CPython's, not ours:
  - a code object's slot (codeslot_attach, and the native core's hot_slot_attach): the code
    object owns it and frees it on death, and CPython never frees some code objects at exit
    (tests/test_native.py proves the slot is freed when its code object dies, with the
    live-slot counter);
  - the module's own objects made in PyInit__native: single-phase modules live until exit.
The forked child in the fork scenario is checked too (valgrind follows forks).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

EXERCISE = Path(__file__).resolve().parent.parent / "tests" / "native" / "exercise.py"
SUPPRESSIONS = Path(__file__).resolve().parent / "cpython.supp"
OURS = "_native.cpython"
OWNED_BY_CPYTHON = ("codeslot_attach", "hot_slot_attach", "PyInit__native")


def our_frames(error: ET.Element) -> list[str]:
    """The function names of the error's stack frames that are in our extension."""
    stack = error.find("stack")
    frames = stack.findall("frame") if stack is not None else []
    return [f.findtext("fn") or "?" for f in frames if OURS in (f.findtext("obj") or "")]


def describe(error: ET.Element) -> str:
    """The error's text and its stack, for the report."""
    what = error.find("xwhat")
    text = what.findtext("text") if what is not None else error.findtext("what")
    stack = error.find("stack")
    frames = stack.findall("frame") if stack is not None else []
    lines = [f"  {f.findtext('fn')} ({f.findtext('file')}:{f.findtext('line')})"
             for f in frames[:16]]
    return "\n".join([f"{error.findtext('kind')}: {text}", *lines])


def problems(xml_file: str) -> list[str]:
    """What fails in one process's valgrind report."""
    found = []
    for error in ET.parse(xml_file).getroot().iter("error"):
        kind = error.findtext("kind") or ""
        if not kind.startswith("Leak_"):
            found.append(describe(error))
        elif kind == "Leak_DefinitelyLost":
            ours = our_frames(error)
            if ours and ours[0] not in OWNED_BY_CPYTHON:
                found.append(describe(error))
    return found


def main() -> int:
    """Run, check, report; the exit status is the verdict."""
    if shutil.which("valgrind") is None:
        print("native memcheck: valgrind is not installed (apt-get install valgrind)",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            ["valgrind", "--leak-check=full", "--show-leak-kinds=definite",
             f"--suppressions={SUPPRESSIONS}",
             "--num-callers=40", "--xml=yes", f"--xml-file={folder}/vg.%p.xml",
             sys.executable, str(EXERCISE), "all"],
            env={**os.environ, "PYTHONMALLOC": "malloc"}, capture_output=True, text=True,
            timeout=600, check=False)
        if done.returncode != 0:
            print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
            print(f"native memcheck: the scenarios failed under valgrind ({done.returncode})",
                  file=sys.stderr)
            return 1
        reports = sorted(glob.glob(f"{folder}/vg.*.xml"))
        found = [p for report in reports for p in problems(report)]
    for problem in found:
        print(problem, file=sys.stderr)
    scenarios = len(done.stdout.splitlines())
    print(f"native memcheck: {len(found)} problems in our code "
          f"({scenarios} scenario reports, {len(reports)} processes checked)")
    return 1 if found or len(reports) < 2 else 0


if __name__ == "__main__":
    sys.exit(main())
