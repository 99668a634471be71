"""The bridge: a monitor consumer that turns finished calls into spans.

* A trace starts at a root call: its OTel parent is whatever span is current then (a request
  span, a span the user made, ``TRACEPARENT`` inherited from a parent process), or none, in
  which case it starts a new trace. The provider's sampler decides once per root; calls in an
  unsampled trace capture nothing and make no spans.
* Span ids are assigned lazily: when a call's span is first needed as a parent (a library span
  opened inside it, a kept child) or when it is exported. Calls that are dropped or folded never
  get one.
* A call started inside a library span (the raw OTel context changed since its parent started)
  is that span's child: the one-tree rule.
* Spans for the private pipeline are built on its export worker: at a call's end only the
  decisions and the span's makings are made here (:mod:`flowtrace_otel.otel.offthread`);
  processors of any other provider get built spans in ``on_end``, as ever.
"""

from __future__ import annotations

import os
import random
import threading
import weakref
from typing import Any, cast

from opentelemetry import propagate, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, get_value
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, set_span_in_context

from flowtrace_otel import __version__, _settings
from flowtrace_otel import records as r
from flowtrace_otel._options import Options
from flowtrace_otel.monitor_protocol import CallMonitor
from flowtrace_otel.otel import offthread, pipeline, request_scope, shaping
from flowtrace_otel.otel.export_queue import TraceQueue
from flowtrace_otel.otel.shaping import CallState, Fold, TraceBudget
from flowtrace_otel.otel.spans import CallSpan, build_fold_span, build_span, span_context

_MAX_TRACE_IDS = 1000


class Bridge:
    """Consumer of finished calls; exports them through a TracerProvider."""

    def __init__(self, options: Options, tracer_provider: TracerProvider | None = None) -> None:
        """Remember the options; the provider is resolved when the first trace starts."""
        self.options = options
        self.explicit_provider = tracer_provider
        self.private_provider: TracerProvider | None = None
        self.monitor: CallMonitor | None = None
        self.offset = 0
        self.scope = InstrumentationScope("flowtrace_otel", __version__)
        self._trace_ids: list[str] = []
        self._lock = threading.Lock()
        self._inherited = _traceparent_context()
        self.max_spans = max(options.max_spans_per_trace, 1)
        self.fold_after = options.fold_after
        self.min_duration_ns = options.min_duration_us * 1000
        # our own generator: the SDK's default draws from the program's global ``random``,
        # which would change what a seeded program computes
        self._random = random.Random()
        #: in a fork child: ids of the calls that were open when the process forked; they are
        #: the parent's calls, exported once, by the parent (the child's calls nest under them)
        self.forked_open: frozenset[int] = frozenset()
        #: spans for the private pipeline are built on its export worker (``offthread``)
        self.build_on_worker: bool = _settings.read("FLOWTRACE_OTEL_BUILD_ON_WORKER")
        self._known_processors: object = None  # the processors _worker_queues last looked at
        self._known_queues: tuple[TraceQueue, ...] | None = None
        self.reseed()
        _BRIDGES.add(self)

    # --- provider ----------------------------------------------------------------------------
    def provider(self) -> TracerProvider:
        """The explicit provider, else the application's global one, else a private one."""
        if self.explicit_provider is not None:
            return self.explicit_provider
        app = pipeline.application_provider()
        if app is not None:
            return app
        if self.private_provider is not None:
            return self.private_provider
        with self._lock:
            if self.private_provider is None:
                self.private_provider = pipeline.build_private_provider()
            return self.private_provider

    def providers(self) -> list[TracerProvider]:
        """Every provider spans may have gone to (for flushing)."""
        found = [self.explicit_provider, pipeline.application_provider(), self.private_provider]
        unique: list[TracerProvider] = []
        for provider in found:
            if provider is not None and provider not in unique:
                unique.append(provider)
        return unique

    def child_env(self) -> dict[str, str]:
        """``TRACEPARENT`` (and ``TRACESTATE``) of the current call, for a child process."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return {key.upper(): value for key, value in carrier.items()
                if key in ("traceparent", "tracestate")}

    def force_flush(self, timeout_ms: int = 3000) -> None:
        """Export what is queued now, waiting at most about ``timeout_ms``."""
        for provider in self.providers():
            if provider is self.private_provider:
                provider.force_flush(timeout_ms)  # its queues wait with a bound themselves
            else:  # the SDK's force_flush may wait forever (opentelemetry-python#4568)
                pipeline.bounded(lambda p=provider: p.force_flush(timeout_ms), timeout_ms)

    def trace_ids(self) -> list[str]:
        """Hex ids of the sampled traces started here (the first 1000)."""
        return list(self._trace_ids)

    # --- consumer protocol --------------------------------------------------------------------
    def reseed(self) -> None:
        """Seed the id generator from the OS (again in a fork child: no shared ids)."""
        self._random.seed(int.from_bytes(os.urandom(16), "big"))

    def new_id(self, provider: TracerProvider, bits: int) -> int:
        """A trace (128 bits) or span (64 bits) id; a provider's custom generator is used."""
        generator = provider.id_generator
        if type(generator) is not RandomIdGenerator:
            return int(generator.generate_trace_id() if bits == 128
                       else generator.generate_span_id())
        value = 0
        while not value:
            value = self._random.getrandbits(bits)
        return value

    def on_root(self, rec: r.Record) -> bool:
        """Start a trace: find the OTel parent, ask the sampler, set up the budget."""
        raw = _context(rec.ctx)
        if get_value(_SUPPRESS_INSTRUMENTATION_KEY, raw):
            return False  # an export in progress (a user-defined exporter): never traced
        handed_over = rec.outer_ctx  # a root's: the hand-over's context, if any
        if handed_over is not None and not _library_span_since(raw, _context(handed_over)):
            return False  # a thread of an unsampled trace: unsampled too
        provider = self.provider()
        parent = trace.get_current_span(raw).get_span_context()
        parent_ctx = raw
        if parent.is_valid:
            request_scope.attached(raw)  # a request span? remembered with its WSGI call
        else:  # a call after its request span ended, still in the request?
            late = request_scope.SCOPE.parent()
            if late is not None:
                parent_ctx = late
                parent = trace.get_current_span(late).get_span_context()
        if not parent.is_valid and self._inherited is not None:
            parent_ctx = self._inherited
            parent = trace.get_current_span(parent_ctx).get_span_context()
        if parent.is_valid:
            trace_id = parent.trace_id
        else:
            trace_id = self.new_id(provider, 128)
        name = rec.info.qualname
        result = provider.sampler.should_sample(parent_ctx, trace_id, name, SpanKind.INTERNAL)
        sampled = bool(result.decision.is_sampled())  # type: ignore[no-untyped-call]
        state = CallState(trace_id, sampled)
        state.parent_span = parent if parent.is_valid else None
        state.trace_state = result.trace_state
        state.budget = TraceBudget()
        if result.attributes:
            state.user = {"attributes": dict(result.attributes)}
        rec.ext = state
        if sampled and len(self._trace_ids) < _MAX_TRACE_IDS:
            self._trace_ids.append(f"{trace_id:032x}")
        return sampled

    def wants_values(self, parent: r.Record | None, info: r.CodeInfo) -> bool:
        """False when a starting call's span will be dropped or folded: capture nothing.

        A prediction from what has ended so far: the trace's span budget is spent, or the
        parent already kept ``fold_after`` calls of this function. If the call is kept after
        all (it raises, or has kept children), its span says its values were not captured.
        """
        if parent is None:
            return True
        root_state: CallState | None = parent.root.ext
        if root_state is not None and root_state.budget.kept >= self.max_spans:
            return False
        state: CallState | None = parent.ext
        if state is not None and state.same_fn and self.fold_after:
            return state.same_fn.get(id(info), 0) < self.fold_after
        return True

    def on_end(self, rec: r.Record) -> None:
        """Keep, drop or fold a finished call; export what is kept."""
        if self.forked_open and rec.id in self.forked_open:
            return  # the parent process's call: it exports it
        if rec.ctx is not rec.outer_ctx and get_value(_SUPPRESS_INSTRUMENTATION_KEY,
                                                      _context(rec.ctx)):
            return  # inside an export run on the caller's thread (force_flush)
        parent = rec.parent
        state: CallState | None = rec.ext
        if state is None and rec.ctx is not rec.outer_ctx:
            state = self.state_of(rec)  # is a library span its parent? (then it is kept)
        parent_state = (parent.ext or self.state_of(parent)) if parent is not None else None
        if state is None:
            base = parent_state if parent_state is not None else self.state_of(rec)
            if not base.sampled:
                return
            budget = base.budget
        else:
            if not state.sampled:
                return
            budget = state.budget
        decision = shaping.decide(rec, state or _EMPTY, parent_state, budget, self.max_spans,
                                  self.fold_after, self.min_duration_ns)
        if decision == shaping.KEEP:
            if state is None:
                state = self.state_of(rec)
            self.emit(rec, state)
            budget.kept += 1
            if parent_state is not None:
                parent_state.kept_children += 1
            return
        dropped = state.dropped if state is not None else 0
        folded = state.folded if state is not None else 0
        assert parent_state is not None  # roots are always kept
        if decision == shaping.DROP:
            parent_state.dropped += 1 + dropped
            parent_state.folded += folded
            budget.dropped += 1
        else:
            folds = parent_state.folds
            if folds is None:
                folds = parent_state.folds = {}
            key = id(rec.info)
            fold = folds.get(key)
            if fold is None:
                fold = folds[key] = Fold(rec.info)
            fold.add(rec.start, rec.end)
            parent_state.folded += 1 + folded
            parent_state.dropped += dropped
            budget.folded += 1

    # --- ids and parents ------------------------------------------------------------------------
    def state_of(self, rec: r.Record) -> CallState:
        """The call's state, created (with its ancestors') on first need."""
        state: CallState | None = rec.ext
        if state is not None:
            return state
        chain = []
        node: r.Record | None = rec
        while node is not None and node.ext is None:
            chain.append(node)
            node = node.parent
        above: CallState | None = node.ext if node is not None else None
        for record in reversed(chain):
            above = record.ext = self._new_state(record, above)
        assert above is not None
        return above

    def _new_state(self, rec: r.Record, parent_state: CallState | None) -> CallState:
        """State for a non-root call: same trace as its parent, unless a library span intervened."""
        library = self._library_parent(rec)
        if library is not None:
            # a library span's child: that span's trace, sampled as it is; in another trace
            # than its parent call's (a request with its own trace id), it is that trace's
            # outermost call, with a span budget of its own
            state = CallState(library.trace_id, bool(library.trace_flags.sampled))
            state.parent_span = library
            state.trace_state = library.trace_state
            if parent_state is not None and parent_state.trace_id == library.trace_id:
                state.budget = parent_state.budget
            else:
                state.budget = TraceBudget()
            return state
        if parent_state is not None:
            state = CallState(parent_state.trace_id, parent_state.sampled)
            state.trace_state = parent_state.trace_state
            state.budget = parent_state.budget
        else:  # a root whose on_root never ran (tracing started in between)
            state = CallState(0, False)
            state.budget = TraceBudget()
        return state

    def _library_parent(self, rec: r.Record) -> Any:
        """The SpanContext of a library span opened between the parent's start and ours."""
        if not rec.detached:
            return None
        parent = rec.parent
        span = trace.get_current_span(_context(rec.ctx))
        if parent is not None and span is trace.get_current_span(_context(parent.ctx)):
            return None  # same span as the parent's: a copied or re-attached context
        if isinstance(span, CallSpan):
            return None  # our own call's span re-attached: the record parent is right
        context = span.get_span_context()
        return context if context.is_valid else None

    def span_id(self, state: CallState) -> int:
        """Assign the call's span id if it has none yet."""
        if not state.span_id:
            state.span_id = self.new_id(self.provider(), 64)
        return state.span_id

    def context_for(self, rec: r.Record) -> Context:
        """The Context making this open call's span current (built once per call)."""
        state = self.state_of(rec)
        if state.context is None:
            self.span_id(state)
            base = _context(rec.ctx) if rec.ctx is not None else Context()
            state.span = CallSpan(span_context(state), rec, state)
            state.context = set_span_in_context(state.span, base)
        return state.context  # type: ignore[no-any-return]

    def parent_context(self, rec: r.Record, state: CallState) -> Any:
        """The SpanContext of the span's parent (a call's, a library span's, or none)."""
        if state.parent_span is not None:
            return state.parent_span
        parent = rec.parent
        if parent is None:
            return None
        parent_state = self.state_of(parent)
        self.span_id(parent_state)
        return span_context(parent_state)

    # --- export ------------------------------------------------------------------------------
    def emit(self, rec: r.Record, state: CallState) -> None:
        """Build the call's span (and its fold aggregates) and hand them to the processors.

        For the private pipeline the spans are built on its export worker: only their makings
        are queued here (:meth:`_queue_items`).
        """
        provider = self.provider()
        self.span_id(state)
        if provider is self.private_provider:
            if rec.parent is None:
                self._report_drops(provider, state)
            queues = self._worker_queues(provider)
            if queues is not None:
                self._queue_items(rec, state, provider, queues)
                return
        processor = provider._active_span_processor
        resource = provider.resource
        processor.on_end(build_span(rec, state, self.parent_context(rec, state), self.offset,
                                    resource, self.scope))
        if state.folds:
            for fold in state.folds.values():
                span_id = self.new_id(provider, 64)
                processor.on_end(build_fold_span(fold, state, span_id, self.offset, resource,
                                                 self.scope))
            state.folds = None

    def _worker_queues(self, provider: TracerProvider) -> tuple[TraceQueue, ...] | None:
        """The private provider's TraceQueues when they are its only processors, else None."""
        processors = getattr(provider._active_span_processor, "_span_processors", None)
        if processors is not self._known_processors:  # a tuple, replaced when one is added
            queues = tuple(p for p in processors or () if isinstance(p, TraceQueue))
            usable = self.build_on_worker and processors is not None \
                and len(queues) == len(processors)
            self._known_queues = queues if usable else None
            self._known_processors = processors
        return self._known_queues

    def _queue_items(self, rec: r.Record, state: CallState, provider: TracerProvider,
                     queues: tuple[TraceQueue, ...]) -> None:
        """Queue the makings of the call's span and its folds; the export worker builds them.

        Decides here what needs the live state: the parent link (as :meth:`parent_context`),
        whether the span is a local root, fold span ids. A TraceQueue keeps sampled spans only.
        """
        resource = provider.resource
        trace_id = state.trace_id
        if state.sampled:
            parent: Any = state.parent_span
            if parent is not None:  # a library span's, or a remote one (TRACEPARENT)
                root, top = bool(parent.is_remote), False
            elif rec.parent is None:
                root = top = True
            else:
                root = top = False
                parent_state = rec.parent.ext or self.state_of(rec.parent)
                parent = parent_state.span_id or self.span_id(parent_state)
                if (parent_state.span_context is not None or not parent_state.sampled
                        or parent_state.trace_id != trace_id
                        or parent_state.trace_state is not state.trace_state):
                    parent = span_context(parent_state)  # the worker could not rebuild it
            item = offthread.call_item(rec, state, parent, self.offset, resource, self.scope)
            for queue in queues:
                queue.put(item, trace_id, root, top)
        if state.folds:
            parent = state.span_id if state.sampled else span_context(state)
            for fold in state.folds.values():
                item = offthread.fold_item(fold, state, self.new_id(provider, 64), parent,
                                           self.offset, resource, self.scope)
                for queue in queues:
                    queue.put(item, trace_id, False, False)
            state.folds = None

    def assign_open_ids(self) -> None:
        """Span ids for this thread's open recorded calls (and its adopted parent)."""
        monitor = self.monitor
        if monitor is None:
            return
        for rec in monitor.thread_calls():
            if rec is not None and rec.recording and rec.info is not None:
                self.span_id(self.state_of(rec))

    def _report_drops(self, provider: TracerProvider, state: CallState) -> None:
        """Put the private queue's drop counts since the last report on this root's span."""
        for queue in pipeline.trace_queues(provider):
            report = queue.report_drops(state.trace_id)
            if report:
                user = state.user = dict(state.user or {})
                user["attributes"] = {**user.get("attributes", {}), **report}

    def lost_trace_ids(self) -> set[str]:
        """Hex ids of traces with spans the private pipeline did not deliver."""
        if self.private_provider is None:
            return set()
        return {f"{trace_id:032x}" for queue in pipeline.trace_queues(self.private_provider)
                for trace_id in queue.lost_trace_ids()}


def _context(token: object) -> Context:
    """A record's context token: the bridge's ``ctx_get`` reads OTel Contexts (or NOTHING, one)."""
    return cast("Context", token)


def _library_span_since(raw: Context, before: Context) -> bool:
    """True when ``raw`` holds a valid span, not a call's, other than the one in ``before``."""
    span = trace.get_current_span(raw)
    return (span is not trace.get_current_span(before) and not isinstance(span, CallSpan)
            and span.get_span_context().is_valid)


_EMPTY = CallState(0, True)
_BRIDGES: weakref.WeakSet[Bridge] = weakref.WeakSet()


def _ids_before_fork() -> None:
    """Before ``fork``: give the forking thread's open calls their span ids.

    Ids are assigned lazily; a call still open when the process forks is the parent of the
    child's calls, so the child and the parent must agree on its id (the parent exports it).
    """
    for bridge in list(_BRIDGES):
        try:
            bridge.assign_open_ids()
        except Exception:
            pass


def _reseed_after_fork() -> None:
    """In a fork child, every bridge draws new ids and leaves the parent's open calls alone."""
    for bridge in list(_BRIDGES):
        bridge.reseed()
        if bridge.monitor is not None:
            bridge.forked_open = frozenset(rec.id for rec in bridge.monitor.open_records())


os.register_at_fork(before=_ids_before_fork, after_in_child=_reseed_after_fork)


def _traceparent_context() -> Context | None:
    """The parent context inherited from a parent process through ``TRACEPARENT``."""
    carrier = {key.lower(): os.environ[key] for key in ("TRACEPARENT", "TRACESTATE")
               if os.environ.get(key)}
    if "traceparent" not in carrier:
        return None
    context = propagate.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None
