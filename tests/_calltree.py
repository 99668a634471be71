"""Checks shared by the concurrency tests: the shape and the invariants of recorded calls.

Every helper takes the ``CallEvent`` list of a stopped ``TraceSession``.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowtrace_otel import CallEvent, TraceSession
from flowtrace_otel import monitoring as m

ENDED = ("returned", "raised", "closed")


def named(events: list[CallEvent], name: str) -> list[CallEvent]:
    """The events of the function whose qualified name ends with ``name``, in start order."""
    return [e for e in events if e.func_name == name or e.func_name.endswith("." + name)]


def one(events: list[CallEvent], name: str) -> CallEvent:
    """The single event of ``name`` (fails if there are none or several)."""
    found = named(events, name)
    assert len(found) == 1, f"expected one call of {name}, got {len(found)}: {found}"
    return found[0]


def by_id(events: list[CallEvent]) -> dict[int, CallEvent]:
    """Events indexed by id."""
    return {e.id: e for e in events}


def parent_of(events: list[CallEvent], event: CallEvent) -> CallEvent | None:
    """The parent event of ``event`` (None for a root)."""
    return by_id(events).get(event.parent_id) if event.parent_id is not None else None


def parent_name(events: list[CallEvent], event: CallEvent) -> str | None:
    """The short name of ``event``'s parent, or None for a root."""
    parent = parent_of(events, event)
    return parent.func_name.rsplit(".", 1)[-1] if parent is not None else None


def children(events: list[CallEvent], event: CallEvent) -> list[CallEvent]:
    """The direct children of ``event``, in start order."""
    return [e for e in events if e.parent_id == event.id]


def short(name: str) -> str:
    """``outer.<locals>.inner`` -> ``inner``."""
    return name.rsplit(".", 1)[-1]


def tree(events: list[CallEvent], root: CallEvent | None = None) -> list[object]:
    """The call tree as nested ``[name, [children...]]`` lists, children sorted by name.

    Sorting makes the shape independent of how concurrent siblings interleaved.
    """
    roots = [root] if root is not None else [e for e in events if e.parent_id is None]
    kids: dict[int | None, list[CallEvent]] = {}
    for e in events:
        kids.setdefault(e.parent_id, []).append(e)

    def build(e: CallEvent) -> list[object]:
        return [short(e.func_name), sorted((build(c) for c in kids.get(e.id, [])), key=repr)]

    return sorted((build(r) for r in roots), key=repr)


def check_well_formed(events: list[CallEvent], *, unfinished: Iterable[str] = (),
                      outliving: Iterable[str] = ()) -> None:
    """Assert the invariants every recording must keep.

    * every call ended (``unfinished`` names the functions allowed to stay open);
    * every parent exists and started before its child (ids grow with start order, so this
      also rules out cycles);
    * start <= end, and a child lies inside its parent's time, except the calls named in
      ``outliving`` (a task, thread or generator that outlives the call that started it).
    """
    allowed_open = set(unfinished)
    outlive = set(outliving)
    index = by_id(events)
    assert len(index) == len(events), "duplicate ids"
    for e in events:
        if e.status not in ENDED:
            assert e.status == "unfinished", e
            assert short(e.func_name) in allowed_open, f"call did not end: {e}"
        assert e.start_ns <= e.end_ns, e
        if e.parent_id is None:
            continue
        parent = index.get(e.parent_id)
        assert parent is not None, f"parent {e.parent_id} of {e.func_name} not recorded"
        assert parent.id < e.id, f"parent {parent.func_name} started after {e.func_name}"
        assert parent.start_ns <= e.start_ns, f"{e.func_name} starts before its parent"
        if short(e.func_name) not in outlive:
            assert e.end_ns <= parent.end_ns, (
                f"{e.func_name} ends after its parent {parent.func_name}")


def ordered_session() -> tuple[TraceSession, list[int]]:
    """A session that also notes the ids of records in the order they were reported ended."""
    session = TraceSession()
    order: list[int] = []
    keep = session.on_end

    def on_end(record: m.Record) -> None:
        order.append(record.id)
        keep(record)

    session.on_end = on_end
    return session, order


def check_children_reported_first(events: list[CallEvent], order: list[int], *,
                                  outliving: Iterable[str] = ()) -> None:
    """Each call was reported ended before its parent (what a span exporter relies on)."""
    position = {record_id: i for i, record_id in enumerate(order)}
    assert sorted(position) == sorted(e.id for e in events), "a call was reported twice or never"
    outlive = set(outliving)
    for e in events:
        if e.parent_id is not None and short(e.func_name) not in outlive:
            assert position[e.id] < position[e.parent_id], f"{e.func_name} reported after parent"
