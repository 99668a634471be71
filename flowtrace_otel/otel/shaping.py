"""Size control that never lies: which finished calls become spans, and what is counted instead.

Decided per call when it ends, streaming (no tree is held in memory):

* kept always: a trace's root (also a call under a library span of another trace than its
  caller's, such as a request span: it starts that trace, with a budget of its own), a call
  that raised, a call with kept children (children end before their parent, so a parent
  knows);
* otherwise dropped when shorter than ``min_duration_us`` (if set) or when the trace already
  holds ``max_spans_per_trace`` spans;
* otherwise folded when its parent already had ``fold_after`` kept calls of the same function:
  folded calls become one aggregate span per (parent, function) with count, total, min and max
  duration, emitted when the parent ends.

Every drop and fold is counted on the parent span (``flowtrace.dropped_calls``,
``flowtrace.folded_calls``; descendants included) and on the root span of the trace.
"""

from __future__ import annotations

from typing import Any

from flowtrace_otel import records as r


class Fold:
    """Aggregate of folded calls of one function under one parent."""

    __slots__ = ("count", "first_start", "info", "last_end", "max_ns", "min_ns", "total_ns")

    def __init__(self, info: r.CodeInfo) -> None:
        self.info = info
        self.count = 0
        self.total_ns = 0
        self.min_ns = 1 << 62
        self.max_ns = 0
        self.first_start = 1 << 62
        self.last_end = 0

    def add(self, start: int, end: int) -> None:
        """Count one more folded call."""
        duration = end - start
        self.count += 1
        self.total_ns += duration
        self.min_ns = min(self.min_ns, duration)
        self.max_ns = max(self.max_ns, duration)
        self.first_start = min(self.first_start, start)
        self.last_end = max(self.last_end, end)


class CallState:
    """The bridge's per-call state (a record's ``EXT``), created when first needed."""

    __slots__ = (
        "budget",
        "context",
        "dropped",
        "folded",
        "folds",
        "kept_children",
        "parent_span",
        "same_fn",
        "sampled",
        "span",
        "span_context",
        "span_id",
        "trace_id",
        "trace_state",
        "user",
    )

    def __init__(self, trace_id: int, sampled: bool) -> None:
        self.trace_id = trace_id
        self.sampled = sampled
        self.span_id = 0
        self.parent_span: Any = None    # SpanContext of the OTel parent, when not a record
        self.trace_state: Any = None
        self.kept_children = 0
        self.dropped = 0                # calls below this one that were dropped
        self.folded = 0                 # calls below this one that were folded
        self.same_fn: dict[int, int] | None = None     # kept children per function
        self.folds: dict[int, Fold] | None = None
        self.context: Any = None        # cached Context holding this call's span
        self.span: Any = None           # the span object handed out as current
        self.span_context: Any = None   # its SpanContext, built once (see spans.span_context)
        self.user: dict[str, Any] | None = None         # attributes/events set by user code
        self.budget: TraceBudget = _NO_BUDGET         # the trace's counters (shared)


class TraceBudget:
    """Per-trace counters on the root: spans kept and calls dropped or folded."""

    __slots__ = ("dropped", "folded", "kept")

    def __init__(self) -> None:
        self.kept = 0
        self.dropped = 0
        self.folded = 0


_NO_BUDGET = TraceBudget()
KEEP, DROP, FOLD = 0, 1, 2


def decide(rec: r.Record, state: CallState, parent_state: CallState | None,
           budget: TraceBudget, max_spans: int, fold_after: int, min_duration_ns: int) -> int:
    """KEEP, DROP or FOLD for a finished call (see the module docstring for the rules)."""
    if (rec.parent is None or rec.exc is not None or state.kept_children
            or (parent_state is not None and budget is not parent_state.budget)):
        return KEEP  # (the last: the outermost call of another trace, under a library span)
    if min_duration_ns and rec.end - rec.start < min_duration_ns:
        return DROP
    if parent_state is not None and fold_after:
        same = parent_state.same_fn
        if same is None:
            same = parent_state.same_fn = {}
        key = id(rec.info)
        seen = same.get(key, 0)
        if seen >= fold_after:
            return FOLD
        same[key] = seen + 1
    if budget.kept >= max_spans:
        return DROP
    return KEEP
