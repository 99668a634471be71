"""Spans built on the export worker: at a call's end the user's thread only queues their makings.

Used when the spans go to the private pipeline (the bridge's own TracerProvider, whose only
processors are :class:`~flowtrace_otel.otel.export_queue.TraceQueue` s). At a kept call's end
the user's thread still makes every decision that needs the live state (keep, drop or fold,
span ids, the parent link, the drop report on a root, events and status when something
happened), then copies what the span is made of into one tuple, an *item*: plain values
(rendered strings, ints, immutable SpanContexts, a copy of a :class:`Fold`), never the record,
its call state, its context or an exception. The export worker turns items into
``ReadableSpan`` s just before it exports them (:func:`build`), with the same functions the
other path uses (:func:`~flowtrace_otel.otel.spans.call_attributes`,
:func:`~flowtrace_otel.otel.spans.fold_span`), so both paths give the same spans.

An item is a tuple whose first element is its builder: :func:`build` calls it, and
``item[1]`` is its trace id (what the queue needs to know of it, with its root flags).
See ``docs/export.md`` ("Spans built on the export worker").
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind

from flowtrace_otel import records as r
from flowtrace_otel.otel.shaping import CallState, Fold
from flowtrace_otel.otel.spans import SAMPLED, UNSET, call_attributes, events_and_status, fold_span

#: an item: ``(builder, trace_id, ...)``; the rest is the builder's
Item = tuple[Any, ...]


def call_item(rec: r.Record, state: CallState, parent: SpanContext | int | None, offset: int,
              resource: Any, scope: Any) -> Item:
    """What a kept (sampled) call's span is made of, read off the live record and state now.

    ``parent`` is the parent's SpanContext, or the span id of a parent call of the same trace,
    sampled, with the same trace state (its SpanContext is then built on the worker).
    ``rec.error`` (the exception object) is only valid now: events and status are made here
    when anything happened (an exception, handled exceptions, user annotations).
    """
    user = state.user
    if rec.caught is None and rec.exc is None and not user:
        extra = None  # the common case: nothing happened
    else:
        events, status = events_and_status(rec, state, rec.end + offset)
        attrs = user.get("attributes") if user else None
        extra = (events, status, dict(attrs) if attrs else None)
    thread: r.ThreadState = rec.thread
    return (_build_call, state.trace_id, state.span_id, state.trace_state, parent, rec.info,
            rec.start + offset, rec.end + offset, rec.args, rec.result, rec.status, thread.ident,
            thread.name, rec.task, rec.resumes, rec.suspended, state.dropped, state.folded, extra,
            resource, scope)


def fold_item(fold: Fold, state: CallState, span_id: int, parent: SpanContext | int,
              offset: int, resource: Any, scope: Any) -> Item:
    """What the aggregate span of ``fold`` (folded calls under the call of ``state``) is made of.

    ``parent`` is that call's SpanContext, or its span id when it is sampled (the worker
    builds the same SpanContext). The fold's figures are copied: the call has ended and later
    folds under it go to a new aggregate, but a late child on another thread may be adding to
    this one at this very moment.
    """
    copy = Fold(fold.info)
    copy.count, copy.total_ns, copy.min_ns, copy.max_ns = (fold.count, fold.total_ns,
                                                           fold.min_ns, fold.max_ns)
    copy.first_start, copy.last_end = fold.first_start, fold.last_end
    return (_build_fold, state.trace_id, span_id, state.trace_state, parent, copy, offset,
            resource, scope)


def build(item: Item, contexts: dict[int, SpanContext] | None = None) -> ReadableSpan:
    """The span an item stands for (on the export worker).

    ``contexts`` (by span id) shares the SpanContexts built for one batch: a call's own is
    its children's parent, as on the program's thread, where it is built once per call.
    """
    span: ReadableSpan = item[0](item, {} if contexts is None else contexts)
    return span


def is_item(entry: object) -> bool:
    """True for an item (a ``ReadableSpan`` is not a tuple)."""
    return type(entry) is tuple


def _context(contexts: dict[int, SpanContext], trace_id: int, span_id: int,
             trace_state: Any) -> SpanContext:
    """The sampled SpanContext of a call, built once per batch."""
    context = contexts.get(span_id)
    if context is None or context.trace_id != trace_id:
        context = contexts[span_id] = SpanContext(trace_id, span_id, False, SAMPLED, trace_state)
    return context


def _parent(contexts: dict[int, SpanContext], trace_id: int, parent: SpanContext | int | None,
            trace_state: Any) -> Any:
    """The parent's SpanContext (from a sampled parent call's span id: the same trace state)."""
    if type(parent) is int:
        return _context(contexts, trace_id, parent, trace_state)
    return parent


def _build_call(item: Item, contexts: dict[int, SpanContext]) -> ReadableSpan:
    """The span of a call item."""
    (_, trace_id, span_id, trace_state, parent, info, start, end, args, result, status,
     thread_id, thread_name, task, resumes, suspended, dropped, folded, extra, resource,
     scope) = item
    if extra is None:
        events: list[Any] = []
        span_status = UNSET
        user = None
    else:
        events, span_status, user = extra
    return ReadableSpan(
        name=info.qualname,
        context=_context(contexts, trace_id, span_id, trace_state),
        parent=_parent(contexts, trace_id, parent, trace_state),
        resource=resource,
        attributes=call_attributes(info, args, result, status, thread_id, thread_name, task,
                                   resumes, suspended, dropped, folded, user),
        events=events,
        kind=SpanKind.INTERNAL,
        status=span_status,
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def _build_fold(item: Item, contexts: dict[int, SpanContext]) -> ReadableSpan:
    """The aggregate span of a fold item."""
    _, trace_id, span_id, trace_state, parent, fold, offset, resource, scope = item
    context = SpanContext(trace_id, span_id, False, SAMPLED, trace_state)
    return fold_span(fold, context, _parent(contexts, trace_id, parent, trace_state), offset,
                     resource, scope)
