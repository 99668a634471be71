"""flowtrace_otel._native.Record, the C record, against the reference records.Record.

The C monitor to come builds these instead of records.Record; consumers (events.to_event,
the OpenTelemetry bridge, spans) must not be able to tell the two apart.  The memory side
(no leak, cycles freed) also runs under valgrind: tests/native/exercise.py's ``record``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from types import MemberDescriptorType
from typing import Any

import pytest

from flowtrace_otel import records
from flowtrace_otel.core import CORE_ENV, choose_core
from flowtrace_otel.events import to_event

NATIVE = choose_core({}).native
if NATIVE is None and os.environ.get(CORE_ENV) == "python":
    pytest.skip(f"the C core is not built and {CORE_ENV}=python", allow_module_level=True)

from flowtrace_otel import _native  # noqa: E402 - after the skip: absent without a C build

EXERCISE = Path(__file__).parent / "native" / "exercise.py"
# helpers of records.Record that only the Python core calls (a C core builds ghosts in C)
PYTHON_CORE_ONLY = {"blank"}


def fields(cls: type) -> set[str]:
    """The public data fields of a class: its member descriptors (slots, PyMemberDef)."""
    return {name for name, value in vars(cls).items()
            if isinstance(value, MemberDescriptorType) and not name.startswith("_")}


def work(n: int, *rest: int, key: str = "k", **more: int) -> int:
    """The function the records describe."""
    return n


INFO = records.CodeInfo(work.__code__, ())
THREAD = records.ThreadState()


def python_record(values: dict[str, Any]) -> records.Record:
    """records.Record built as monitoring.py builds one: every slot stored."""
    rec = object.__new__(records.Record)
    rec.info, rec.parent, rec.thread, rec.id = INFO, None, THREAD, 0
    rec.start = rec.end = rec.suspended = rec.resumes = rec._mark = 0
    rec.args = rec.result = rec.exc = rec.exc_state = rec.caught = rec.error = None
    rec.runs = rec.task = rec.ext = rec.status = rec.ctx = rec.outer_ctx = None
    rec._kids = rec._last_raised = rec._owner = None
    rec.recording = False
    rec.root = rec
    for name, value in values.items():
        setattr(rec, name, value)
    return rec


def c_record(values: dict[str, Any]) -> Any:
    """The C record with the same values (info and thread as for python_record)."""
    return _native.Record(info=INFO, thread=THREAD, **values)


CTX = object()
CASES: dict[str, dict[str, Any]] = {
    "open root": {"id": 1, "start": 100},
    "returned with values": {
        "id": 7, "start": 100, "end": 250, "status": "returned", "recording": True,
        "args": (("n", "3", "p"), ("rest", "(4, 5)", "*"), ("key", "'v'", "k"),
                 ("more", "{'x': 1}", "**")),
        "result": "3", "ctx": CTX, "outer_ctx": CTX},
    "declined values": {"id": 2, "start": 5, "end": 9, "status": "returned",
                        "result": records.NO_VALUES},
    "raised, caught inside": {
        "id": 3, "start": 10, "end": 20, "status": "raised", "exc": ("ValueError", "bad", 99),
        "exc_state": "propagated", "caught": [("KeyError", "'k'")]},
    "generator, odd marks": {"id": 4, "start": 10, "end": 90, "status": "returned",
                             "runs": [20, 30, 40], "suspended": 10, "resumes": 1,
                             "task": "Task-1"},
    "generator, even marks": {"id": 5, "start": 10, "end": 90, "status": "returned",
                              "runs": [20, 30, 40, 50], "suspended": 30, "resumes": 2},
    "closed while suspended": {"id": 6, "start": 10, "end": 0, "status": "closed",
                               "runs": [20]},
    "unfinished, running past its last mark": {"id": 8, "start": 10, "end": 0,
                                               "runs": [20, 30]},
    "empty runs": {"id": 9, "start": 10, "end": 12, "status": "returned", "runs": []},
}


def test_the_c_record_has_exactly_the_public_fields_of_records_record() -> None:
    assert fields(_native.Record) == fields(records.Record)


def test_the_c_record_has_the_helpers_consumers_call() -> None:
    helpers = {name for name in vars(records.Record)
               if not name.startswith("_") and name not in fields(records.Record)}
    missing = helpers - PYTHON_CORE_ONLY - set(dir(_native.Record))
    assert helpers - PYTHON_CORE_ONLY and not missing


@pytest.mark.parametrize("case", CASES)
def test_a_c_record_converts_to_the_same_call_event(case: str) -> None:
    values = CASES[case]
    assert to_event(c_record(values), 1000) == to_event(python_record(values), 1000)


@pytest.mark.parametrize("case", CASES)
def test_helpers_give_the_same_results(case: str) -> None:
    c_rec, py_rec = c_record(CASES[case]), python_record(CASES[case])
    assert c_rec.run_slices() == py_rec.run_slices()
    assert (c_rec.detached, repr(c_rec)) == (py_rec.detached, repr(py_rec))


def test_a_child_converts_with_its_parents_id_and_reads_its_roots_state() -> None:
    c_root, py_root = c_record({"id": 1, "ext": "root state"}), python_record({"id": 1})
    c_child = c_record({"id": 2, "parent": c_root, "root": c_root, "outer_ctx": CTX})
    py_child = python_record({"id": 2, "parent": py_root, "root": py_root, "outer_ctx": CTX})
    assert to_event(c_child, 0) == to_event(py_child, 0)
    assert (c_child.root.ext, c_root.root is c_root, c_child.detached) == ("root state", True,
                                                                         True)


def test_fields_check_types_and_an_unset_field_raises_like_an_unset_slot() -> None:
    rec = c_record({})
    with pytest.raises(TypeError):
        rec.start = "soon"
    with pytest.raises(TypeError):
        rec.recording = 1  # a bool field, as records.Record's annotation says
    with pytest.raises(AttributeError):
        _native.Record(no_such_field=1)
    del rec.runs
    with pytest.raises(AttributeError, match="runs"):
        rec.run_slices()
    rec.ext = {"span": 1}
    assert (rec.ext, rec.status, rec.parent, rec.end) == ({"span": 1}, None, None, 0)


class Holder:
    """A consumer's state that points back at its record (the bridge keeps such state)."""

    rec: Any = None


def test_reference_cycles_through_records_are_collected() -> None:
    gc.collect()
    root = c_record({"id": 1})  # its own root: a cycle already
    child = c_record({"id": 2, "parent": root, "root": root})
    holder = Holder()
    holder.rec, child.ext = child, holder
    alive = weakref.ref(holder)
    del root, child, holder
    assert alive() is not None  # only the collector can free the cycle
    gc.collect()
    assert alive() is None


FREE_A_DEEP_CHAIN = """
import threading, weakref
from flowtrace_otel import _native

class Holder:
    pass

def build_and_free():
    holder = Holder()
    alive = weakref.ref(holder)
    rec = _native.Record(id=1, root=None, ext=holder)
    for depth in range(2, 200_000):
        rec = _native.Record(id=depth, parent=rec, root=None)
    del holder, rec  # no cycle: freed by reference counting, one record inside another
    print("freed" if alive() is None else "alive")

threading.stack_size(1 << 19)  # a small C stack: a recursive free would overflow it
worker = threading.Thread(target=build_and_free)
worker.start()
worker.join()
"""


def test_a_deep_chain_of_parents_is_freed_without_exhausting_the_c_stack() -> None:
    done = subprocess.run([sys.executable, "-c", FREE_A_DEEP_CHAIN], capture_output=True,
                          text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "freed"), done.stderr


def test_the_memory_check_scenario_sees_every_record_freed() -> None:
    done = subprocess.run([sys.executable, str(EXERCISE), "record"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"slices": 200, "last_slices": [[20, 21], [22, 23], [24, 30]],
                      "repr": "<Record 1199 fib returned>", "errors": 400,
                      "cycles_freed": 200}
