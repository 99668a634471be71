"""Exception events of library code: never a tracer callback where the interpreter allows it.

``PY_THROW``, ``PY_UNWIND`` and ``EXCEPTION_HANDLED`` cannot be DISABLEd. From Python 3.15
(gh-142186) they can be enabled per code object; the monitor then enables them on traced code
objects only. 3.12-3.14 refuse that, so there every library exception event reaches the
callbacks (one cache lookup each), which the monitor counts. Counted, not timed.
"""

from __future__ import annotations

import os
import sys

from flowtrace_otel import TraceSession
from flowtrace_otel.monitoring import M, claim_tool_id, local_exception_events

LOOKUPS = 300


def look_up_missing(n: int) -> int:
    """Library code raising and handling KeyError inside itself (os._Environ, Mapping.get)."""
    found = 0
    for i in range(n):
        if os.environ.get(f"FLOWTRACE_TEST_SURELY_MISSING_{i}") is None:
            found += 1
    return found


def test_the_interpreter_says_whether_exception_events_can_be_local() -> None:
    tool_id = claim_tool_id()
    try:
        assert local_exception_events(tool_id) == (sys.version_info >= (3, 15))
    finally:
        M.free_tool_id(tool_id)


def test_library_exceptions_call_into_the_tracer_only_where_they_cannot_be_local() -> None:
    with TraceSession() as session:
        monitor = session._monitor
        assert monitor is not None
        assert look_up_missing(LOOKUPS) == LOOKUPS
    foreign = monitor.foreign_exceptions  # type: ignore[attr-defined]
    if monitor.local_exceptions:  # type: ignore[attr-defined]
        assert foreign == 0
    else:
        # each lookup: the library's __getitem__ unwinds, Mapping.get handles it
        assert sys.version_info < (3, 15)
        assert foreign >= 2 * LOOKUPS
    (call,) = [e for e in session.events if e.func_name == "look_up_missing"]
    assert call.caught == [] and call.status == "returned"  # the library's, not the user's


def test_user_code_exceptions_are_still_seen_with_library_ones_around() -> None:
    def user_raises() -> None:
        os.environ.get("FLOWTRACE_TEST_SURELY_MISSING")
        raise KeyError("mine")

    def user_catches() -> str:
        try:
            user_raises()
        except KeyError as error:
            return str(error)
        return ""

    with TraceSession() as session:
        assert user_catches() == "'mine'"
    by_name = {e.func_name.rsplit(".", 1)[-1]: e for e in session.events}
    assert by_name["user_raises"].exc_state == "caught"
    assert by_name["user_catches"].caught == [("KeyError", "'mine'")]
