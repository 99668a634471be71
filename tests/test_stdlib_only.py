"""The core works with ``opentelemetry`` unimportable: it uses the standard library only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CORE = ("flowtrace_otel", "flowtrace_otel.events", "flowtrace_otel.session",
        "flowtrace_otel.monitoring", "flowtrace_otel.filters", "flowtrace_otel.formatters",
        "flowtrace_otel.capture", "flowtrace_otel.cli", "flowtrace_otel.handoff",
        "flowtrace_otel._options", "flowtrace_otel.doctor", "flowtrace_otel.records",
        "flowtrace_otel.monitor_protocol", "flowtrace_otel.core", "flowtrace_otel.html")

BLOCKERS = {
    "meta_path": textwrap.dedent("""\
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(f"blocked: {name}")
                return None
        sys.meta_path.insert(0, Block())
    """),
    "sys_modules_none": "import sys\nsys.modules['opentelemetry'] = None\n",
}

USE_THE_CORE = textwrap.dedent("""\
    import importlib, json, os, sys
    for name in {core!r}:
        importlib.import_module(name)
    try:
        import opentelemetry  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("opentelemetry is importable: the blocker failed")

    import flowtrace_otel
    from flowtrace_otel.formatters import format_tree, to_json

    def fib(n):
        return n if n <= 1 else fib(n - 1) + fib(n - 2)

    flowtrace_otel.start_tracing()
    fib(3)
    events = flowtrace_otel.stop_tracing()
    print(format_tree(events, show_timing=False), end="")
    assert len(json.loads(to_json(events))) == 5

    @flowtrace_otel.trace(show_timing=False)
    def twice(x):
        return 2 * x
    assert twice(2) == 4

    from flowtrace_otel.cli import main
    assert main(["run", {script!r}]) == 0

    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry" and sys.modules[m])
    print("loaded:", loaded)
""")


@pytest.mark.parametrize("blocker", list(BLOCKERS))
def test_core_works_without_opentelemetry(blocker: str, tmp_path: Path) -> None:
    script = tmp_path / "tiny.py"
    script.write_text("def hello():\n    return 'hi'\n\nprint(hello())\n")
    program = tmp_path / "blocked.py"  # a file: code from -c (<string>) is not user code
    program.write_text(BLOCKERS[blocker] + USE_THE_CORE.format(core=CORE, script=str(script)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLOWTRACE_OTEL"))}
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "→ fib(3)\n  → fib(2)\n    → fib(1)\n    → fib(0)\n  ← fib(2)\n  → fib(1)\n← fib(3)\n"
        "hi\n"
        "loaded: []\n"
    )
    assert "→ twice(2)" in done.stderr and "→ hello() → 'hi'" not in done.stderr
    assert "→ hello()" in done.stderr


def test_core_modules_do_not_mention_opentelemetry_imports() -> None:
    package = Path(__file__).resolve().parent.parent / "flowtrace_otel"
    for name in CORE:
        path = package / (name.split(".", 1)[1] + ".py" if "." in name else "__init__.py")
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(("import opentelemetry", "from opentelemetry")):
                pytest.fail(f"{path.name} imports OpenTelemetry: {stripped}")
