"""The private pipeline's span processor: whole traces queued, kept or dropped whole, exported.

Used only by the TracerProvider the bridge builds when the application set none (never under
an application's own provider: its processors get our spans unchanged). See ``docs/export.md``.

* **Traces travel together.** Spans arrive children first (a parent ends after its children).
  A trace's spans wait in ``open`` until its local root ends (a span with no parent, or a
  remote one from ``TRACEPARENT``); then the whole trace moves to ``ready`` and the export
  worker sends it in one request (with other whole traces, up to the batch size). Spans of a
  trace that end after its root (a thread that outlived the call that started it) follow on
  their own: their parent was sent already.
* **Loss policy.** The queue holds at most ``limit`` spans before it refuses *new traces*
  (``FLOWTRACE_OTEL_QUEUE_SPANS``): a refused trace is dropped whole, at its first span, so no
  span is ever sent whose parent was dropped, and the traces already admitted (whose roots end
  last) are all sent. A trace already admitted may grow the queue up to ``2 * limit`` (the
  hard bound); past it, the trace that would cross it is dropped whole too. Drops are counted:
  the next exported root span carries ``flowtrace.dropped_traces`` and
  ``flowtrace.dropped_spans`` (the drops since the previous report), and the exit reports the
  totals in one stderr line.
* **The worker** is a bare ``_thread`` thread, not a ``threading.Thread``: it is not listed by
  ``threading.enumerate()``/``active_count()`` (test suites and programs check those for
  leaks), and ``threading``'s exit join does not wait for it. Hence flushing and shutdown are
  signalled with ``_thread`` locks and waited for with a timeout (:meth:`force_flush`,
  :meth:`shutdown`). After ``fork`` the child gets an empty queue, fresh locks and no worker
  until it has something to send (the parent sends what was queued before the fork).
* **Forked children** flush synchronously (bounded) at task boundaries: :meth:`flush_here`.

The queue carries finished ``ReadableSpan`` s (:meth:`TraceQueue.on_end`) or *items*, the makings
of spans that the worker builds just before it exports them (:meth:`TraceQueue.put`, from the
bridge: :mod:`flowtrace_otel.otel.offthread`); both count alike.
"""

from __future__ import annotations

import _thread
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from flowtrace_otel.otel import bootstrap, offthread

log = logging.getLogger("flowtrace_otel")

#: spans the queue holds before it refuses new traces (``FLOWTRACE_OTEL_QUEUE_SPANS``)
DEFAULT_QUEUE_SPANS = 32768
#: spans per export request, whole traces (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``)
DEFAULT_BATCH_SPANS = 512
#: the worker sends what is ready at least this often (``OTEL_BSP_SCHEDULE_DELAY``, ms)
DEFAULT_DELAY_MS = 1000
#: seconds (at most) of shutdown's time kept for an export in flight to end after its exporter
#: was shut down
_SETTLE_S = 0.5
#: trace ids remembered as dropped / sent, so that late spans follow their trace's fate
_REMEMBERED = 4096


class DropCount:
    """Traces and spans dropped: since the last report on a root, and in total."""

    __slots__ = ("spans", "total_spans", "total_traces", "traces")

    def __init__(self) -> None:
        self.traces = self.spans = self.total_traces = self.total_spans = 0

    def add(self, traces: int, spans: int) -> None:
        """Count a drop."""
        self.traces += traces
        self.spans += spans
        self.total_traces += traces
        self.total_spans += spans

    def take(self) -> dict[str, int]:
        """The attributes reporting the drops since the last call (empty when none)."""
        if not self.spans:
            return {}
        report = {"flowtrace.dropped_traces": self.traces, "flowtrace.dropped_spans": self.spans}
        self.traces = self.spans = 0
        return report


class TraceQueue(SpanProcessor):
    """A span processor that queues whole traces and exports them from a ``_thread`` worker."""

    def __init__(self, exporter: SpanExporter, limit: int = DEFAULT_QUEUE_SPANS,
                 batch: int = DEFAULT_BATCH_SPANS, delay_ms: int = DEFAULT_DELAY_MS,
                 make_exporter: Callable[[], SpanExporter] | None = None) -> None:
        """Queue for ``exporter``; the worker starts with the first trace to send.

        ``make_exporter`` builds the exporter a fork child uses: the parent's holds pooled
        connections that the child must not write into.
        """
        self.exporter = exporter
        self.make_exporter = make_exporter
        self._stale_exporter = False
        self.limit = max(limit, 1)
        self.hard_limit = 2 * self.limit
        self.batch = max(batch, 1)
        self.delay_s = max(delay_ms, 1) / 1000
        self.drops = DropCount()
        self.sent_spans = 0
        self.failed_spans = 0  # spans the exporter reported as not delivered
        self.attempts = 0  # export requests made
        self.failed_attempts = 0  # export requests that failed
        self.last_error = ""
        self._reset()
        _QUEUES.add(self)

    def _reset(self) -> None:
        """Empty state and fresh locks (at creation and in a fork child)."""
        self._lock = _thread.allocate_lock()
        self._wake = _thread.allocate_lock()  # released to wake the worker
        self._wake.acquire()
        self._export_lock = _thread.allocate_lock()  # one export at a time
        self._open: dict[int, list[Any]] = {}  # spans or items (offthread), by trace id
        self._ready: deque[list[Any]] = deque()
        self._ready_spans = 0
        self.held = 0  # spans in open + ready
        self._dropped: dict[int, None] = {}  # trace ids dropped (late spans are dropped too)
        self._sent: dict[int, None] = {}  # trace ids whose root was queued to send
        self._failed: dict[int, None] = {}  # trace ids with spans the exporter did not deliver
        self._in_flight: list[int] = []  # trace ids of the batch being exported now
        self._worker_pid = 0  # the process whose worker runs (0: none)
        self._stopping = False
        self._closed = False  # the exporter is shut down: nothing more is sent
        self._idle: Any = None  # a lock released by the worker when the queue is empty

    # --- producer side (user threads) ---------------------------------------------------------
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        """Spans reach us finished only."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished span with its trace; a finished trace becomes ready to send."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        parent = span.parent
        self.put(span, context.trace_id, parent is None or parent.is_remote, parent is None)

    def put(self, span: Any, trace_id: int, root: bool, top: bool) -> None:
        """Queue a sampled span or item: ``root`` when its parent is remote or none (``top``)."""
        wake = False
        with self._lock:
            spans = self._open.get(trace_id)
            if spans is None:
                if trace_id in self._dropped:
                    self.drops.add(0, 1)
                    return
                if trace_id in self._sent:  # a late span: its parent is on its way
                    if self.held >= self.hard_limit:
                        self.drops.add(0, 1)
                        return
                    spans = [span]
                    self.held += 1
                    self._ready.append(spans)
                    self._ready_spans += 1
                    wake = self._ready_spans >= self.batch
                elif self.held >= self.limit:
                    self._drop(trace_id, 1)
                    return
                else:
                    spans = self._open[trace_id] = [span]
                    self.held += 1
            elif self.held >= self.hard_limit:
                del self._open[trace_id]
                self.held -= len(spans)
                self._drop(trace_id, len(spans) + 1)
                return
            else:
                spans.append(span)
                self.held += 1
            if root and trace_id in self._open:
                del self._open[trace_id]
                self._ready.append(spans)
                self._ready_spans += len(spans)
                if top:  # under a remote parent, the next top call groups anew
                    _remember(self._sent, trace_id)
                wake = self._ready_spans >= self.batch or wake
        if wake or (root and self._worker_pid != _getpid()):
            self._wake_worker()

    def _drop(self, trace_id: int, spans: int) -> None:
        """Count a trace dropped whole; its later spans are dropped with it (lock held)."""
        _remember(self._dropped, trace_id)
        self.drops.add(1, spans)

    def report_drops(self, trace_id: int) -> dict[str, int]:
        """Attributes for a root span about to be queued: the drops since the last report."""
        if not self.drops.spans or trace_id in self._dropped:
            return {}
        with self._lock:
            return self.drops.take()

    # --- the worker ---------------------------------------------------------------------------
    def _wake_worker(self) -> None:
        """Start the worker in this process if needed, and wake it."""
        if self._worker_pid != _getpid():
            with self._lock:
                if self._worker_pid == _getpid() or self._stopping:
                    return
                self._worker_pid = _getpid()
            try:
                _thread.start_new_thread(self._run, ())
            except RuntimeError:  # interpreter shutting down: exit flushes synchronously
                self._worker_pid = 0
                return
        try:
            self._wake.release()
        except RuntimeError:  # already awake
            pass

    def _run(self) -> None:
        """The export loop: wait for a wake-up or the delay, send what is ready."""
        pid = _getpid()
        worker_idents.add(_thread.get_ident())
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while self._worker_pid == pid:
                self._wake.acquire(timeout=self.delay_s)
                self._send_ready()
                _forget_dummy_thread()
                idle = self._idle
                if idle is not None and not self._ready:
                    self._idle = None
                    _release(idle)
                if self._stopping:
                    break
        finally:
            detach(token)
            _forget_dummy_thread()
            worker_idents.discard(_thread.get_ident())

    def _take_batch(self) -> list[Any]:
        """Whole ready traces, up to the batch size (a larger trace goes alone)."""
        batch: list[Any] = []
        with self._lock:
            while self._ready and (not batch or len(batch) + len(self._ready[0]) <= self.batch):
                batch.extend(self._ready.popleft())
            self._ready_spans -= len(batch)
        return batch

    def _send_ready(self) -> None:
        """Export every ready trace, batch by batch (none once the exporter is shut down)."""
        with self._export_lock:
            while not self._closed:
                batch = self._take_batch()
                if not batch:
                    return
                self._export(batch)

    def _export(self, batch: Sequence[Any]) -> None:
        """One export request (items built into spans first); what it did not deliver is counted."""
        if self._stale_exporter and self.make_exporter is not None:
            self.exporter = self.make_exporter()  # a fork child's own connections
        self._stale_exporter = False
        self.attempts += 1
        with self._lock:
            self._in_flight = [_trace_id(span) for span in batch]
        try:
            contexts: dict[int, Any] = {}  # SpanContexts shared within the batch
            spans = [offthread.build(span, contexts) if offthread.is_item(span) else span
                     for span in batch]
            result = self.exporter.export(spans)
        except Exception as error:  # an exporter must not stop the worker
            result = SpanExportResult.FAILURE
            self.last_error = repr(error)
        else:
            if result is not SpanExportResult.SUCCESS:  # our exporters say why; stock ones log
                self.last_error = str(getattr(self.exporter, "last_failure", "") or "")
        with self._lock:
            self.held -= len(batch)
            self._in_flight = []
        if result is SpanExportResult.SUCCESS:
            self.sent_spans += len(batch)
        else:
            self.failed_spans += len(batch)
            self.failed_attempts += 1
            with self._lock:
                for span in batch:
                    _remember(self._failed, _trace_id(span))

    # --- flushing -----------------------------------------------------------------------------
    def _close_open(self) -> None:
        """Make every open trace ready (at flush: their roots are not coming, or elsewhere)."""
        with self._lock:
            for spans in self._open.values():
                self._ready.append(spans)
                self._ready_spans += len(spans)
            self._open.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything queued, open traces included; wait at most ``timeout_millis``."""
        self._close_open()
        if not self.held:  # nothing ready, nothing in flight
            return True
        if self._worker_pid != _getpid():
            self.flush_here(timeout_millis)
            return not self._ready
        idle = _thread.allocate_lock()
        idle.acquire()
        self._idle = idle
        self._wake_worker()
        return bool(idle.acquire(timeout=timeout_millis / 1000)) or not self._ready

    def flush_here(self, timeout_millis: int = 3000) -> None:
        """Send what is queued on this thread (a fork child at a task boundary), bounded.

        The exporter's own timeout bounds each request; no request starts after the deadline.
        """
        deadline = time.monotonic() + timeout_millis / 1000
        self._close_open()
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            if not self._export_lock.acquire(timeout=timeout_millis / 1000):
                return
            try:
                while time.monotonic() < deadline:
                    batch = self._take_batch()
                    if not batch:
                        return
                    self._export(batch)
            finally:
                self._export_lock.release()
        finally:
            detach(token)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Flush, stop the worker, shut the exporter down: within ``timeout_millis`` in all.

        The last quarter (at most ``_SETTLE_S``) is kept for an export still in flight when
        the flush stopped waiting: once its exporter is shut down its retries stop, and it ends
        as sent or failed, with its reason, rather than be reported as still held.
        """
        settle_ms = min(_SETTLE_S * 1000, timeout_millis / 4)
        self.force_flush(int(timeout_millis - settle_ms))
        self._stopping = True
        self._worker_pid = 0
        try:
            self._wake.release()
        except RuntimeError:
            pass
        self._closed = True
        if not self._stale_exporter:  # a fork child leaves the parent's connections alone
            self.exporter.shutdown()
        if self._export_lock.acquire(timeout=settle_ms / 1000):  # an export in flight?
            self._export_lock.release()

    def lost_trace_ids(self) -> set[int]:
        """Traces with spans that did not reach the backend (dropped, failed or still held)."""
        with self._lock:
            lost = {*self._dropped, *self._failed, *self._open, *self._in_flight}
            lost.update(_trace_id(span) for spans in self._ready for span in spans)
        return lost

    def worker_alive(self) -> bool:
        """True when this process runs an export worker for this queue."""
        return self._worker_pid == _getpid()

    def undelivered(self) -> int:
        """Spans that did not reach the backend: dropped, failed in export, or still held."""
        return self.drops.total_spans + self.failed_spans + self.held

    # --- fork ---------------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """The parent sends what it queued; the child starts empty, without a worker."""
        self._reset()
        self._stale_exporter = True
        self.drops = DropCount()
        self.sent_spans = self.failed_spans = self.attempts = self.failed_attempts = 0


def _trace_id(span: Any) -> int:
    """The trace id of a queued span or item."""
    trace_id: int = span[1] if offthread.is_item(span) else span.context.trace_id
    return trace_id


def _remember(table: dict[int, None], trace_id: int) -> None:
    """Add to an insertion-ordered set that forgets its oldest entries."""
    table[trace_id] = None
    if len(table) > _REMEMBERED:
        for old in list(table)[: _REMEMBERED // 4]:
            del table[old]


def _release(lock: Any) -> None:
    """Release a lock that may already be released."""
    try:
        lock.release()
    except RuntimeError:
        pass


_getpid: Callable[[], int] = os.getpid
#: idents of the running export workers (a log filter unlists their dummy threads)
worker_idents: set[int] = set()


def forget_dummy_thread() -> None:
    """On an export worker: unlist a dummy thread made for it (see :func:`_forget_dummy_thread`)."""
    if _thread.get_ident() in worker_idents:
        _forget_dummy_thread()


def _forget_dummy_thread() -> None:
    """Unlist the ``_DummyThread`` that ``threading.current_thread()`` may have made for us.

    Code run by the worker (``logging`` records an export error with the thread's name) calls
    ``threading.current_thread()``, which registers a dummy ``Thread`` for a thread that
    ``threading`` did not start, and ``threading.enumerate()`` would list it from then on.
    """
    ident = _thread.get_ident()
    active: dict[int, Any] | None = getattr(threading, "_active", None)
    if active is None or ident not in active:
        return
    lock = getattr(threading, "_active_limbo_lock", None)
    if lock is None:
        return
    with lock:
        entry = active.get(ident)
        if entry is not None and isinstance(entry, threading._DummyThread):  # type: ignore[attr-defined]
            del active[ident]


_QUEUES: weakref.WeakSet[TraceQueue] = weakref.WeakSet()
_in_fork_child = False


def _reinit_in_child() -> None:
    """After ``fork``: every queue starts empty in the child (no worker runs there)."""
    global _in_fork_child
    _in_fork_child = True  # queues made later in this process are a fork child's too
    worker_idents.clear()
    for queue in list(_QUEUES):
        queue._after_fork_in_child()


def queues() -> list[TraceQueue]:
    """The live trace queues of this process."""
    return list(_QUEUES)


def flush_in_child(timeout_millis: int = 3000) -> None:
    """In a forked child, send what finished (a task's result is about to go back)."""
    if not (_in_fork_child or bootstrap.forked):
        return
    for queue in list(_QUEUES):
        if queue.held:  # with or without a worker of its own (force_flush)
            queue.force_flush(timeout_millis)


os.register_at_fork(after_in_child=_reinit_in_child)
