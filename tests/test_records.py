"""The record layout the hot path builds by position matches the named field constants."""

from __future__ import annotations

import contextlib

from flowtrace_otel import monitoring as m


class Capture:
    """A consumer that keeps the raw records."""

    def __init__(self) -> None:
        self.records: list[m.Record] = []

    def on_root(self, record: m.Record) -> bool:
        return True

    def on_end(self, record: m.Record) -> None:
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
        assert len(rec) == m._FIELDS
        assert isinstance(rec[m.INFO], m.CodeInfo)
        assert isinstance(rec[m.ID], int)
        assert isinstance(rec[m.THREAD], m.ThreadState)
        assert 0 < rec[m.START] <= rec[m.END]
        assert rec[m.STATUS] == "returned"
        assert rec[m.RECORDING] is True
        assert rec[m.SUSPENDED] == rec[m.RESUMES] == 0
        for field in (m.OPEN_CHILDREN, m.EXC, m.EXC_STATE, m.CAUGHT, m.CTX, m.MARK, m.TASK,
                      m.EXT, m.ERROR, m.LAST_RAISED, m.OWNER, m.BASE_CTX):
            assert rec[field] is None, field
    assert rec_parent[m.INFO].qualname == "parent"
    assert rec_parent[m.PARENT] is None and rec_parent[m.ROOT] is rec_parent
    assert rec_child[m.PARENT] is rec_parent and rec_child[m.ROOT] is rec_parent
    assert rec_child[m.ID] == rec_parent[m.ID] + 1
    assert rec_child[m.ARGS] == (("x", "3", m.KIND_POSITIONAL),)
    assert rec_child[m.RESULT] == "6"
    assert rec_parent[m.START] <= rec_child[m.START] <= rec_child[m.END] <= rec_parent[m.END]


def test_unrecorded_trace_builds_records_but_reports_none():
    class Refuse(Capture):
        def on_root(self, record: m.Record) -> bool:
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
