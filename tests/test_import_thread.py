"""The exporter's modules are imported by the thread that builds the pipeline, never the exporter's.

Imports share the program's global state while it runs. pytest swaps ``warnings.filters`` around
every test; with ``filterwarnings = error`` an import of ``requests`` on the export thread lost
the filter it had just added, raised urllib3's ``DependencyWarning`` and no span was exported
(seen on toolz's own suite, ``tests/test_real_suites.py``). The program below swaps the filters
the same way, as fast as it can, until the exporter was built.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowtrace_otel.testing import OtlpReceiver
from tests._programs import run_program

PROGRAM = """
    import time
    import warnings

    from flowtrace_otel.otel import deferred_export


    def work(i):
        return i * 2


    deadline = time.monotonic() + 30  # a bound, not a wait: the loop ends at the first build
    calls = 0
    while deferred_export.builds == 0 and time.monotonic() < deadline:
        with warnings.catch_warnings(record=True) as seen:  # as pytest does around each test
            warnings.simplefilter("error")  # as `filterwarnings = error` does
            work(calls)
        calls += 1
        if seen:
            print("the program saw warnings:", [str(w.message) for w in seen])
    print("exporter built" if deferred_export.builds else "exporter never built")
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_export_thread_import_never_meets_the_programs_warning_filters(
        tmp_path: Path, protocol: str) -> None:
    """Spans arrive and the program sees no warning while it swaps filters to "error"."""
    with OtlpReceiver(grpc=protocol == "grpc") as receiver:
        run = run_program(PROGRAM, "env", tmp_path, receiver.env(protocol),
                          OTEL_BSP_SCHEDULE_DELAY="20")
        spans = receiver.spans()
    assert run.code == 0, run.stderr
    assert run.stdout == "exporter built\n", run.stdout
    assert "could not be built" not in run.stderr, run.stderr
    assert "not delivered" not in run.stderr, run.stderr
    works = [s for s in spans if s["name"] == "work"]
    assert works, f"no span of work() arrived; stderr: {run.stderr}"
