"""docs/configuration.md names every OTEL_* variable the package reads itself.

(The FLOWTRACE_OTEL_* table is generated and checked by tests/test_settings.py.) The doctors
are left out: they carry the list of every known OpenTelemetry variable, to spot misspellings.
"""

from __future__ import annotations

import re

from tests._doc_blocks import ROOT

PAGE = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
OTEL_TABLE = PAGE.split("## The `OTEL_*` variables", 1)[1].split("\n## ", 1)[0]


def read_by_the_package() -> set[str]:
    """Every ``"OTEL_..."`` string literal in the package's code, the doctors' lists aside."""
    names: set[str] = set()
    for path in (ROOT / "flowtrace_otel").rglob("*.py"):
        if path.name != "doctor.py":
            names.update(re.findall(r"\"(OTEL_[A-Z_]+)\"", path.read_text(encoding="utf-8")))
    return names


def test_every_otel_variable_read_is_in_the_table() -> None:
    names = read_by_the_package()
    assert {"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_BSP_MAX_QUEUE_SIZE"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in OTEL_TABLE)
    assert missing == []
