#!/usr/bin/env python3
"""Run real libraries' own test suites plainly and with FLOWTRACE_OTEL=1; demand identical results.

For each library (pure Python, self-contained pytest suite) the pinned source distribution is
downloaded once (``pip download --no-binary :all: --no-deps``) into ``.ci/.cache/real_suites``
(ignored by git through its own ``.gitignore``), unpacked into a temporary folder, and its test
suite is run from the unpacked source, so the library's code is user code for the tracer:

1. plainly: ``python -m pytest --junitxml=plain.xml``;
2. traced: the same with ``FLOWTRACE_OTEL=1`` exporting over OTLP/HTTP to a live local receiver
   (:class:`flowtrace_otel.testing.OtlpReceiver`).

It passes when every test id has the same outcome in both runs, both runs exit alike, and spans
of the library's own functions (not only its tests) arrived. Usage::

    python .ci/real_suites.py [--only six,toolz] [--json report.json] [--keep]

Run with the project's interpreter (the one with flowtrace_otel installed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".ci" / ".cache" / "real_suites"


@dataclasses.dataclass(frozen=True)
class Library:
    """A pinned sdist and how to run its suite from the unpacked folder."""

    name: str
    version: str
    tests: tuple[str, ...]      # pytest arguments, relative to the unpacked folder
    package: str                # a path (file or folder) of the library's own code

    @property
    def spec(self) -> str:
        """The pip requirement."""
        return f"{self.name}=={self.version}"


LIBRARIES = {
    "six": Library("six", "1.17.0", ("test_six.py",), "six.py"),
    "toolz": Library("toolz", "1.2.0", ("toolz",), "toolz"),
    # slower (about 30 s plain, minutes traced): opt in with --only more-itertools
    "more-itertools": Library("more-itertools", "11.2.1", ("tests",), "more_itertools"),
}
DEFAULT = ("six", "toolz")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without tracer/OTel/coverage settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWTRACE_OTEL", "OTEL_", "COVERAGE_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def sdist(lib: Library, python: str) -> Path:
    """The cached sdist of ``lib``, downloaded on first use."""
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# downloaded sdists for .ci/real_suites.py\n*\n")
    stem = lib.name.replace("-", "_")
    found = sorted(CACHE.glob(f"{stem}-{lib.version}.tar.gz")) + sorted(
        CACHE.glob(f"{lib.name}-{lib.version}.tar.gz"))
    if found:
        return found[0]
    subprocess.run([python, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                    "--quiet", "--dest", str(CACHE), lib.spec], check=True)
    found = sorted(CACHE.glob(f"{stem}-{lib.version}.tar.gz")) + sorted(
        CACHE.glob(f"{lib.name}-{lib.version}.tar.gz"))
    if not found:
        raise SystemExit(f"real_suites: pip downloaded no sdist for {lib.spec} into {CACHE}")
    return found[0]


def unpack(archive: Path, into: Path) -> Path:
    """Extract ``archive`` under ``into``; return the single top folder."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed / failure / error / skipped, from a junit xml report."""
    result: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        test_id = f"{case.get('classname')}::{case.get('name')}"
        # a test can appear twice (a teardown error after a pass): keep the worst
        result[test_id] = max([result.get(test_id, "passed"), *(kinds or ["passed"])],
                              key=("passed", "skipped", "failure", "error").index)
    return result


def run_suite(lib: Library, source: Path, python: str, junit: Path,
              env: dict[str, str]) -> tuple[int, float, str, list[str]]:
    """Run the suite once: pytest's exit code, the wall time, the output's tail, our lines."""
    started = time.perf_counter()
    proc = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         f"--junitxml={junit}", *lib.tests],
        check=False, cwd=source, env=env, capture_output=True, text=True, timeout=1800)
    output = proc.stdout + proc.stderr
    ours = [line for line in output.splitlines() if "flowtrace_otel" in line][:20]
    return proc.returncode, time.perf_counter() - started, output[-1500:], ours


def check_library(lib: Library, python: str, work: Path) -> dict[str, object]:
    """Run one library plainly and traced; return a report (``ok`` says if they agree)."""
    from flowtrace_otel.testing import OtlpReceiver  # noqa: PLC0415 - needs the project installed

    source = unpack(sdist(lib, python), work / lib.name)
    code_dir = str(source / lib.package)
    plain_xml, traced_xml = work / f"{lib.name}-plain.xml", work / f"{lib.name}-traced.xml"
    plain_code, plain_s, plain_tail, _ = run_suite(lib, source, python, plain_xml, clean_env())
    with OtlpReceiver(grpc=False) as receiver:
        env = clean_env(FLOWTRACE_OTEL="1", OTEL_SERVICE_NAME=f"real-suite-{lib.name}",
                        **receiver.env("http/protobuf"))
        traced_code, traced_s, traced_tail, tracer_lines = run_suite(
            lib, source, python, traced_xml, env)
        spans = receiver.spans()
    plain, traced = outcomes(plain_xml), outcomes(traced_xml)
    differing = sorted(t for t in plain.keys() | traced.keys() if plain.get(t) != traced.get(t))
    files = [str(s["attributes"].get("code.file.path", "")) for s in spans]
    library_spans = sum(f == code_dir or f.startswith(code_dir + os.sep) for f in files)
    library_spans -= sum("/tests/" in f or os.path.basename(f).startswith("test_")
                         for f in files if f.startswith(code_dir))
    names = sorted({str(s["name"]) for s in spans
                    if str(s["attributes"].get("code.file.path", "")).startswith(code_dir)})
    counts = {kind: list(plain.values()).count(kind)
              for kind in ("passed", "failure", "error", "skipped")}
    ok = (not differing and plain_code == traced_code and len(plain) > 0
          and library_spans > 0 and plain_code in (0, 1))
    return {
        "library": lib.spec, "ok": ok, "tests": len(plain), "outcomes": counts,
        "differing": differing[:50], "exit_codes": [plain_code, traced_code],
        "seconds": [round(plain_s, 2), round(traced_s, 2)], "spans": len(spans),
        "library_spans": library_spans, "library_functions": names[:1000],
        "tracer_lines": tracer_lines,  # what the tracer said in the traced run (exit line ...)
        "plain_tail": plain_tail if not ok else "", "traced_tail": traced_tail if not ok else "",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suites; print a summary; exit 1 if any differs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma-separated libraries (known: {', '.join(LIBRARIES)})")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run suites with")
    parser.add_argument("--json", metavar="FILE", help="write the reports as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the unpacked folders")
    ns = parser.parse_args(argv)
    chosen = [name.strip() for name in ns.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in LIBRARIES]
    if unknown:
        parser.error(f"unknown libraries: {', '.join(unknown)}")
    work = Path(tempfile.mkdtemp(prefix="flowtrace-real-suites-"))
    reports = []
    try:
        for name in chosen:
            report = check_library(LIBRARIES[name], ns.python, work)
            reports.append(report)
            plain_s, traced_s = report["seconds"]  # type: ignore[misc]
            print(f"{'OK  ' if report['ok'] else 'FAIL'} {report['library']}: "
                  f"{report['tests']} tests {report['outcomes']}, same outcome traced: "
                  f"{not report['differing']}; {report['spans']} spans "
                  f"({report['library_spans']} of library code); "
                  f"plain {plain_s}s, traced {traced_s}s", flush=True)
            if not report["ok"]:
                print(json.dumps(report, indent=2), file=sys.stderr)
    finally:
        if ns.keep:
            print(f"unpacked suites kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if ns.json:
        Path(ns.json).write_text(json.dumps(reports, indent=2))
    return 0 if reports and all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
