"""The interface between a core's monitor and its users, as coverage.py's ``Tracer`` protocol.

A *monitor* owns a ``sys.monitoring`` tool id and its callbacks and turns events into
:class:`~flowtrace_otel.records.Record` objects. Its users never know which core runs:

* a session and the OpenTelemetry bridge are its :class:`Consumer`\\ s (``on_root``,
  ``on_end``), and start, stop and query it through :class:`CallMonitor`;
* the hand-offs (:mod:`flowtrace_otel.handoff`) consume it too: they ask for this thread's
  open call and set the parent a new thread inherits (:meth:`CallMonitor.adopt`). The monitor
  only calls them back through :class:`HandOffs`, which the core installs at start
  (:func:`flowtrace_otel.core.new_monitor`), so monitoring never imports the hand-offs.

The pure-Python :class:`flowtrace_otel.monitoring.Monitor` is the reference implementation;
``tests/test_conformance.py`` is what every core must pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import CodeType, FrameType
from typing import Any, Literal, Protocol

from flowtrace_otel.filters import CodeFilter
from flowtrace_otel.records import Record

#: what a monitor decided for a code object: traced, left alone (DISABLEd), or a watched
#: standard-library function (a hand-off hook); None: not met yet
Disposition = Literal["traced", "ignored", "hook"]


class Consumer(Protocol):
    """What receives records: the in-memory session or the OpenTelemetry bridge."""

    def on_root(self, record: Record) -> bool:
        """Called when a trace starts; return False to record nothing for it."""

    def on_end(self, record: Record) -> None:
        """Called once for every finished record of a recorded trace."""


class HandOffHook(Protocol):
    """A watched standard-library function (``Thread.start``, ``create_task``, ...)."""

    def on_start(self, frame: FrameType) -> Any:
        """The function started (``frame`` is its frame); the return value goes to the event."""

    def on_end(self) -> Any:
        """The function returned or unwound; may return ``DISABLE``."""


class HandOffs(Protocol):
    """What a monitor asks of the hand-offs while it runs (implemented by ``handoff.HandOff``)."""

    @property
    def pending_tasks(self) -> Mapping[int, Any]:
        """Tasks created by a traced call whose coroutine has not started yet (truthy: look)."""
    child_env: Callable[[], dict[str, str]] | None
    """A consumer's variables for a child process (``TRACEPARENT``), or None."""
    child_flush: Callable[[], None] | None
    """A consumer's flush before a forked child sends a result or exits, or None."""

    def hook_for(self, code: CodeType) -> HandOffHook | None:
        """The hook watching ``code``, or None (asked once per new code object)."""

    def task_parent(self, frame: FrameType) -> tuple[Record, object, str | None] | None:
        """For a coroutine's first start: (creator's record, its context, task name), or None."""


class CallMonitor(Protocol):
    """A core's monitor, as its users see it."""

    filter: CodeFilter
    """Which code is the user's."""
    tool_id: int | None
    """The ``sys.monitoring`` tool id held while started, else None."""
    epoch_offset_ns: int
    """Add to a record's ``start``/``end`` (``perf_counter_ns``) for epoch nanoseconds."""
    errors: list[BaseException]
    """Internal errors contained so far (tracing stopped at the first one)."""
    ctx_get: Callable[[], object] | None
    """The consumer's reader of the current context token (records' ``ctx``), or None."""
    handoff: HandOffs
    """The hand-offs this monitor calls back (set by the core before :meth:`start`)."""
    consumers: list[Consumer]
    """The consumers now (read-only: replace them with :meth:`set_consumers`)."""

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, order: tuple[int, ...] = ...) -> None:
        """Claim the first free tool id in ``order`` (or raise ToolIdTaken) and switch on."""

    def stop(self) -> None:
        """Switch off, free the tool id, and end every open call (:meth:`end_open_records`)."""

    def set_consumers(self, consumers: list[Consumer]) -> None:
        """Replace the consumers (the callbacks see the new ones at once)."""

    # --- the calls ------------------------------------------------------------------------------
    def current(self) -> tuple[Record | None, object]:
        """This thread's innermost open call (or its adopted parent) and the context expected."""

    def open_call(self) -> Record | None:
        """The innermost call open on this thread's own stack (never an adopted parent)."""

    def adopt(self, parent: Record | None, ctx: object, thread_name: str | None = None) -> None:
        """Make ``parent`` (handed over with context ``ctx``) this thread's base parent."""

    def release(self, thread_ends: bool) -> None:
        """This thread's hand-over ended; ``thread_ends``: forget the thread if nothing is open."""

    def thread_calls(self) -> list[Record]:
        """This thread's adopted parent (if any) and its open calls, outermost first."""

    def open_records(self) -> list[Record]:
        """Every call open or suspended now, on any thread (a snapshot)."""

    def end_open_records(self) -> None:
        """End every call still open or suspended (``unfinished``, or ``closed``), once."""

    # --- decisions and errors -------------------------------------------------------------------
    def disposition(self, code: CodeType) -> Disposition | None:
        """What was decided for ``code``, without deciding (None: not met yet)."""

    def internal_error(self, error: BaseException) -> None:
        """Contain an error of the tracer's own: log once, stop tracing, never raise."""
