"""The records the hot path builds: every field set, named, of the documented type."""

from __future__ import annotations

import contextlib

from flowtrace_otel import monitoring as m
from flowtrace_otel.records import KIND_POSITIONAL, CodeInfo, Record, ThreadState


class Capture:
    """A consumer that keeps the raw records."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def on_root(self, record: Record) -> bool:
        return True

    def on_end(self, record: Record) -> None:
        self.records.append(record)


def child(x):
    return x * 2


def parent(x):
    return child(x) + 1


def make_monitor() -> tuple[m.Monitor, Capture]:
    from flowtrace_otel.capture import Capturer
    from flowtrace_otel.filters import CodeFilter

    sink = Capture()
    monitor = m.Monitor(CodeFilter(), Capturer(100, 10, False), True, True, ())
    monitor.set_consumers([sink])
    return monitor, sink


def test_fresh_records_have_every_field_where_its_name_says():
    monitor, sink = make_monitor()
    monitor.start()
    try:
        assert parent(3) == 7
    finally:
        monitor.stop()
    rec_child, rec_parent = sink.records
    for rec in (rec_child, rec_parent):
        assert all(hasattr(rec, name) for name in Record.__slots__)  # none left unset
        assert isinstance(rec.info, CodeInfo)
        assert isinstance(rec.id, int)
        assert isinstance(rec.thread, ThreadState)
        assert 0 < rec.start <= rec.end
        assert rec.status == "returned"
        assert rec.recording is True
        assert rec.suspended == rec.resumes == 0
        assert rec._mark == 0
        for field in ("_kids", "exc", "exc_state", "caught", "ctx", "outer_ctx", "task", "ext",
                      "error", "_last_raised", "_owner", "runs"):
            assert getattr(rec, field) is None, field
    assert rec_parent.info.qualname == "parent"
    assert rec_parent.parent is None and rec_parent.root is rec_parent
    assert rec_child.parent is rec_parent and rec_child.root is rec_parent
    assert rec_child.id == rec_parent.id + 1
    assert rec_child.args == (("x", "3", KIND_POSITIONAL),)
    assert rec_child.result == "6"
    assert rec_parent.start <= rec_child.start <= rec_child.end <= rec_parent.end


def test_unrecorded_trace_builds_records_but_reports_none():
    class Refuse(Capture):
        def on_root(self, record: Record) -> bool:
            return False

    from flowtrace_otel.capture import Capturer
    from flowtrace_otel.filters import CodeFilter

    sink = Refuse()
    monitor = m.Monitor(CodeFilter(), Capturer(100, 10, False), True, True, ())
    monitor.set_consumers([sink])
    monitor.start()
    try:
        assert parent(1) == 3
    finally:
        monitor.stop()
    assert sink.records == []


def raise_value(text):
    raise ValueError(text)


def pass_through():
    try:
        try:
            raise_value("passes")
        finally:
            pass
    finally:
        pass


def handles_then_passes():
    try:
        raise_value("handled")
    except ValueError:
        pass
    try:
        raise_value("passes")
    except ValueError:
        raise


def test_handlers_that_let_an_exception_go_on_do_not_list_it_as_caught():
    from flowtrace_otel import TraceSession

    with TraceSession() as s:
        for func in (pass_through, handles_then_passes):
            try:
                func()
            except ValueError:
                pass
    top = {e.func_name: e for e in s.events if e.parent_id is None}
    assert top["pass_through"].caught == []
    assert top["pass_through"].exc_state == "propagated"
    assert top["handles_then_passes"].caught == [("ValueError", "handled")]
    children = [e for e in s.events if e.func_name == "raise_value"]
    assert [(e.exc_msg, e.exc_state) for e in children] == [
        ("passes", "propagated"), ("handled", "caught"), ("passes", "propagated")]


def suppresses_then_raises_another():
    with contextlib.suppress(ValueError):
        raise_value("handled")
    raise KeyError("another")  # allocated where the freed ValueError was (same id)


def test_a_handled_exception_stays_caught_when_another_reuses_its_id():
    """A later exception leaving the parent is not the child's, even at the same address."""
    from flowtrace_otel import TraceSession

    with TraceSession() as s:
        try:
            suppresses_then_raises_another()
        except KeyError:
            pass
    states = {e.func_name: e.exc_state for e in s.events}
    assert states == {"suppresses_then_raises_another": "propagated", "raise_value": "caught"}
