"""Turning a finished call record into an OpenTelemetry span, after the fact.

Spans are built as ``ReadableSpan`` objects from the recorded timestamps and handed to the
provider's span processors' ``on_end`` (2-9 us instead of 22-55 us for ``start_span``/``end``;
see FIELD_NOTES). Processors therefore see our spans only in ``on_end``: a processor that
needs ``on_start`` (to add attributes as spans open) does not see them there. For the private
pipeline they are built on its export worker instead, from the same functions
(:mod:`flowtrace_otel.otel.offthread`).
"""

from __future__ import annotations

import traceback
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import Attributes

from flowtrace_otel import records as r
from flowtrace_otel.otel.shaping import CallState, Fold

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_MAX_FRAMES = 32

# attribute names (a contract: documented in docs/spans.md)
ATTR_FUNCTION = "code.function.name"
ATTR_FILE = "code.file.path"
ATTR_LINE = "code.line.number"
ARG_PREFIX = "flowtrace.arg."
ATTR_RETURN = "flowtrace.return"


NOT_SAMPLED = TraceFlags(0)
UNSET = Status(StatusCode.UNSET)  # immutable: one for every span without an error


def span_context(state: CallState) -> SpanContext:
    """The SpanContext of a call (its span id must be assigned), built once per call.

    It is needed as the span's own context and again as the parent of each exported child.
    """
    context: SpanContext | None = state.span_context
    if context is None:
        context = state.span_context = SpanContext(
            state.trace_id, state.span_id, False, SAMPLED if state.sampled else NOT_SAMPLED,
            state.trace_state)
    return context


def stacktrace(error: BaseException | None, exc_type: str, message: str) -> str:
    """A Python-style stack trace without source lines (no file reads, no user ``__str__``)."""
    lines = ["Traceback (most recent call last):"]
    if error is not None and error.__traceback__ is not None:
        summary = traceback.StackSummary.extract(traceback.walk_tb(error.__traceback__),
                                                 limit=_MAX_FRAMES, lookup_lines=False)
        lines += [f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in summary]
    lines.append(f"{exc_type}: {message}" if message else exc_type)
    return "\n".join(lines)


def attributes(rec: r.Record, state: CallState, offset: int) -> dict[str, Any]:
    """The span attributes of a call (code location, arguments, result, suspension, counts)."""
    thread: r.ThreadState = rec.thread
    user = state.user
    return call_attributes(rec.info, rec.args, rec.result, rec.status, thread.ident, thread.name,
                           rec.task, rec.resumes, rec.suspended, state.dropped, state.folded,
                           user.get("attributes") if user else None)


def call_attributes(info: r.CodeInfo, args: tuple[tuple[str, str, str], ...] | None,
                    result: Any, status: str | None, thread_id: int, thread_name: str,
                    task: str | None, resumes: int, suspended: int, dropped: int, folded: int,
                    user: dict[str, Any] | None) -> dict[str, Any]:
    """The span attributes from the values they are made of (on either thread: see offthread)."""
    attrs: dict[str, Any] = {
        ATTR_FUNCTION: info.full_name,
        ATTR_FILE: info.filename,
        ATTR_LINE: info.line,
    }
    if args:
        for name, text, _kind in args:
            attrs[ARG_PREFIX + name] = text
    if result is r.NO_VALUES:  # kept after all (it raised, or has kept children)
        attrs["flowtrace.values"] = "not captured: span budget spent or call folded"
    elif result is not None and status == "returned":
        attrs[ATTR_RETURN] = result
    attrs["thread.id"] = thread_id
    attrs["thread.name"] = thread_name
    if task:
        attrs["flowtrace.task"] = task
    if resumes:
        attrs["flowtrace.resumes"] = resumes
        attrs["flowtrace.suspended_ms"] = round(suspended / 1e6, 3)
    if status in ("closed", "unfinished"):
        attrs["flowtrace.status"] = status
    if dropped:
        attrs["flowtrace.dropped_calls"] = dropped
    if folded:
        attrs["flowtrace.folded_calls"] = folded
    if user:
        attrs.update(user)
    return attrs


def events_and_status(rec: r.Record, state: CallState,
                      end_epoch: int) -> tuple[list[Event], Status]:
    """Exception events (escaped and handled) and the span status."""
    if rec.caught is None and rec.exc is None and not state.user:
        return [], UNSET  # the common case: nothing happened
    events: list[Event] = []
    status = UNSET
    for exc_type, message in rec.caught or ():
        events.append(Event("flowtrace.exception_handled",
                            {"exception.type": exc_type, "exception.message": message},
                            timestamp=end_epoch))
    exc = rec.exc
    if exc is not None:
        exc_type, message, _ = exc
        events.append(Event("exception", {
            "exception.type": exc_type,
            "exception.message": message,
            "exception.stacktrace": stacktrace(rec.error, exc_type, message),
            "exception.escaped": True,
        }, timestamp=end_epoch))
        status = Status(StatusCode.ERROR, f"{exc_type}: {message}")
    if state.user:
        events.extend(state.user.get("events", ()))
        user_status = state.user.get("status")
        if user_status is not None and exc is None:
            status = user_status
    return events, status


def build_span(rec: r.Record, state: CallState, parent: SpanContext | None, offset: int,
               resource: Any, scope: Any) -> ReadableSpan:
    """The finished span of one call."""
    end_epoch = rec.end + offset
    events, status = events_and_status(rec, state, end_epoch)
    return ReadableSpan(
        name=rec.info.qualname,
        context=span_context(state),
        parent=parent,
        resource=resource,
        attributes=attributes(rec, state, offset),
        events=events,
        kind=SpanKind.INTERNAL,
        status=status,
        start_time=rec.start + offset,
        end_time=end_epoch,
        instrumentation_scope=scope,
    )


def build_fold_span(fold: Fold, parent_state: CallState, span_id: int, offset: int,
                    resource: Any, scope: Any) -> ReadableSpan:
    """The aggregate span standing for folded calls of one function under one parent."""
    context = SpanContext(parent_state.trace_id, span_id, False, SAMPLED, parent_state.trace_state)
    return fold_span(fold, context, span_context(parent_state), offset, resource, scope)


def fold_span(fold: Fold, context: SpanContext, parent: SpanContext, offset: int,
              resource: Any, scope: Any) -> ReadableSpan:
    """The aggregate span of ``fold``, given its own and its parent's SpanContext."""
    info = fold.info
    attrs: Attributes = {
        ATTR_FUNCTION: info.full_name,
        ATTR_FILE: info.filename,
        ATTR_LINE: info.line,
        "flowtrace.folded.count": fold.count,
        "flowtrace.folded.total_ms": round(fold.total_ns / 1e6, 3),
        "flowtrace.folded.min_ms": round(fold.min_ns / 1e6, 3),
        "flowtrace.folded.max_ms": round(fold.max_ns / 1e6, 3),
    }
    return ReadableSpan(
        name=f"{info.qualname} ×{fold.count} (folded)",
        context=context,
        parent=parent,
        resource=resource,
        attributes=attrs,
        kind=SpanKind.INTERNAL,
        start_time=fold.first_start + offset,
        end_time=fold.last_end + offset,
        instrumentation_scope=scope,
    )


class CallSpan(NonRecordingSpan):
    """The span handed out as *current* while a traced call runs.

    Instrumented libraries use it as the parent of their spans. User code may annotate it
    (``trace.get_current_span().set_attribute(...)``): attributes, events and status set while
    the call is open are added to the call's span when it is exported.
    """

    def __init__(self, context: SpanContext, rec: r.Record, state: CallState) -> None:
        super().__init__(context)
        self._rec = rec
        self._state = state

    def record(self) -> r.Record:
        """The call record behind this span."""
        return self._rec

    @property
    def kind(self) -> SpanKind:
        """Function spans are INTERNAL (instrumentations read this off a recording span)."""
        return SpanKind.INTERNAL

    @property
    def name(self) -> str:
        """The function's qualified name, as the exported span will be named."""
        return str(self._rec.info.qualname)

    def _user(self) -> dict[str, Any] | None:
        if self._rec.end:
            return None
        if self._state.user is None:
            self._state.user = {}
        return self._state.user

    def is_recording(self) -> bool:
        """True while the call is open and its trace is sampled."""
        return self._state.sampled and not self._rec.end

    def set_attribute(self, key: str, value: Any) -> None:
        """Add an attribute to the call's span."""
        user = self._user()
        if user is not None:
            user.setdefault("attributes", {})[key] = value

    def set_attributes(self, attributes: Any) -> None:
        """Add attributes to the call's span."""
        for key, value in dict(attributes).items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Attributes = None,
                  timestamp: int | None = None) -> None:
        """Add an event to the call's span."""
        user = self._user()
        if user is not None:
            user.setdefault("events", []).append(Event(name, attributes, timestamp))

    def set_status(self, status: Any, description: str | None = None) -> None:
        """Set the call's span status (an escaping exception still makes it ERROR)."""
        user = self._user()
        if user is not None:
            user["status"] = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        """Add an ``exception`` event (type and message only, captured safely)."""
        from flowtrace_otel.capture import Capturer, exception_message, type_name  # noqa: PLC0415

        attrs: dict[str, Any] = {"exception.type": type_name(exception),
                                 "exception.message": exception_message(exception, Capturer())}
        attrs.update(dict(attributes or {}))
        self.add_event("exception", attrs, timestamp)
