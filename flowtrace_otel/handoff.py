r"""Hand-offs between threads and tasks, observed in the standard library, never patched.

A new thread, a thread-pool work item or an asyncio task has no traced frame below it, so its
first traced call would start a trace of its own. To give it the right parent, the monitor also
watches five standard-library functions (their ``PY_START``, and for a work item its end):

==============================================  =============================================
``threading.Thread.start``                       remember the caller for that thread object
``threading.Thread._bootstrap_inner``            in the new thread: adopt the remembered caller
``concurrent.futures.thread._WorkItem.__init__``  remember the submitter for that work item
``_WorkItem.run``                                in the worker: adopt it until the item ends
``asyncio.BaseEventLoop.create_task``            remember the creator for the coroutine's frame
``subprocess.Popen._execute_child``              child processes: see below
``multiprocessing`` spawn ``Popen._launch``      child processes: see below
``multiprocessing`` ``ForkingPickler.dumps``     a forked worker is about to send a result
``multiprocessing`` ``BaseProcess._bootstrap``   a ``Process`` child's end (it ``os._exit``\ s)
==============================================  =============================================

Forked workers: a ``Pool`` worker is killed by SIGTERM when the pool is terminated (``with
Pool() as p`` does it), and a ``Process`` child ends with ``os._exit`` (no ``atexit``). When a
consumer provides ``child_flush`` (the bridge's queue sends what finished, synchronously and
bounded, only in a forked child), it is called before a worker pickles a result to send back
and when a child's ``_bootstrap`` returns: what the task did is exported before the parent can
see the task done.

Child processes: when a consumer provides ``child_env`` (the OpenTelemetry bridge gives the W3C
``TRACEPARENT`` of the current call), a child started with the inherited environment
(``env=None``) gets those variables: they are put into ``os.environ`` for the duration of the
launch and restored right after (other threads can see them for that moment). A child given an
explicit ``env`` mapping gets them added to a copy on 3.13 (frame locals are writable there,
PEP 667); on 3.12 an explicit ``env`` is left as it is.

Lifetimes: a thread, work item or task may outlive the call that started it (a task created
and not awaited, a thread not joined), and a generator may outlive the call that first advanced
it. Its record keeps that call as parent and simply ends later: the one allowed exception to
"a child's time lies inside its parent's". A worker thread is nobody's child between work
items, and a thread's state is dropped when the thread ends.

The adopted record becomes the parent of the first traced call in that thread, work item or
task. A task whose own coroutine is library code (``create_task(asyncio.wait_for(work(), 5))``)
hands its creator to the first user coroutine it runs, found by walking a few frames up from
that coroutine to the task's. Entries are keyed by object id and checked against a weak
reference, so a reused id never adopts the wrong parent, and a thread or task that never starts
leaves nothing behind; tables are purged of dead entries each time they double.
"""

from __future__ import annotations

import os
import sys
import threading
import types
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowtrace_otel.monitor_protocol import CallMonitor
    from flowtrace_otel.records import Record

_PURGE_AT = 256
_WRAPPER_DEPTH = 4  # frames walked up from a coroutine to the task's own (wrapper) coroutine
DISABLE = sys.monitoring.DISABLE


class HandOff:
    """Pending parents for threads, work items and tasks, plus every thread's state."""

    def __init__(self, monitor: CallMonitor) -> None:
        """Index the watched functions' code objects."""
        self.monitor = monitor
        self.pending_threads: dict[int, tuple[weakref.ref[Any], Record, object]] = {}
        self.pending_items: dict[int, tuple[weakref.ref[Any], Record, object]] = {}
        self.pending_tasks: dict[int, tuple[weakref.ref[Any], Record, object]] = {}
        self.hooks: dict[int, tuple[CodeType, Any]] = {}
        #: watched functions of modules not imported yet (the program may never import them:
        #: importing asyncio & co. here would cost every traced program's start-up)
        self.later: list[tuple[str, str, Any]] = []
        self.purge_at: dict[int, int] = {}  # per pending table: its size at the next purge
        self.child_env: Callable[[], dict[str, str]] | None = None
        self.child_flush: Callable[[], None] | None = None
        child_env_hook = _ChildEnvironment(self)
        child_flush_hook = _ChildFlush(self)
        for module, name, hook in (
            ("subprocess", "Popen._execute_child", child_env_hook),
            ("multiprocessing.popen_spawn_posix", "Popen._launch", child_env_hook),
            # a forked worker pickles each result here; a Process child ends here: flush
            ("multiprocessing.reduction", "ForkingPickler.dumps", child_flush_hook),
            ("multiprocessing.process", "BaseProcess._bootstrap", child_flush_hook),
            ("threading", "Thread.start", _Remember(self, self.pending_threads)),
            ("threading", "Thread._bootstrap_inner", _Adopt(self, self.pending_threads, False)),
            ("concurrent.futures.thread", "_WorkItem.__init__",
             _Remember(self, self.pending_items)),
            ("concurrent.futures.thread", "_WorkItem.run", _Adopt(self, self.pending_items, True)),
            ("asyncio.base_events", "BaseEventLoop.create_task", _RememberTask(self)),
        ):
            if not self._watch(module, name, hook):
                self.later.append((module, name, hook))

    def _watch(self, module: str, name: str, hook: Any) -> bool:
        """Watch ``module.name`` if that module is imported (and defines it by now)."""
        target: Any = sys.modules.get(module)
        if target is None:
            return False
        try:
            for part in name.split("."):
                target = getattr(target, part)
            code = target.__code__
        except AttributeError:  # not imported, or still being imported
            return False
        self.hooks[id(code)] = (code, hook)
        return True

    def hook_for(self, code: CodeType) -> Any:
        """The hook watching ``code``, or None."""
        entry = self.hooks.get(id(code))
        if entry is None and self.later:  # a module imported since? (once per new code object)
            self.later = [item for item in self.later if not self._watch(*item)]
            entry = self.hooks.get(id(code))
        return entry[1] if entry is not None and entry[0] is code else None

    def remember(self, table: dict[int, Any], key_object: Any, ctx: object) -> None:
        """Store the current innermost record as the parent for ``key_object``."""
        parent = self.open_call()
        if parent is None:
            return
        self.store(table, id(key_object), (weakref.ref(key_object), parent, ctx))

    def store(self, table: dict[int, Any], key: int, entry: tuple[Any, ...]) -> None:
        """Add a pending entry; drop the dead ones first once the table has doubled."""
        limit = self.purge_at.get(id(table), _PURGE_AT)
        if len(table) >= limit:
            for dead in [k for k, v in table.items() if v[0]() is None]:
                del table[dead]
            # many live entries (a server's open tasks) must not make each store a full scan
            self.purge_at[id(table)] = max(_PURGE_AT, 2 * len(table))
        table[key] = entry

    def open_call(self) -> Record | None:
        """The innermost call open on this thread's own stack.

        Only a call really running here is handed on, never a parent this thread adopted
        itself: a server thread started by ``main()`` must not make every request thread it
        spawns a child of ``main()`` (and hide the request span the instrumentation makes).
        """
        return self.monitor.open_call()

    def task_parent(self, frame: FrameType) -> tuple[Record, object, str | None] | None:
        """For a coroutine's first start: the record that created its task, if any.

        The task's own coroutine is found by its frame. A user coroutine run by a task whose
        coroutine is not user code (``create_task(asyncio.wait_for(work(), 5))``) is found by
        walking up a few frames to that wrapper, unless a traced call comes first (then the
        coroutine was awaited by that call, which is on the stack and is the right parent).
        """
        hit = self.pending_tasks.pop(id(frame), None)
        if hit is None:
            hit = self._wrapper_of(frame)
            if hit is None:
                return None
        else:
            coro = hit[0]()
            if coro is None or coro.cr_frame is not frame:
                return None
        try:
            task = sys.modules["asyncio"].current_task()  # a task was created: asyncio is in
            name = task.get_name() if task is not None else None
        except (RuntimeError, KeyError):
            name = None
        return hit[1], hit[2], name

    def _wrapper_of(self, frame: FrameType) -> tuple[Any, Record, object] | None:
        """The pending entry of a non-user task coroutine awaiting ``frame``, if any (rare)."""
        disposition = self.monitor.disposition
        back = frame.f_back
        for _ in range(_WRAPPER_DEPTH):
            if back is None:
                return None
            if disposition(back.f_code) == "traced":
                return None  # a traced call awaits this coroutine: it is on the stack
            hit = self.pending_tasks.get(id(back))
            if hit is not None:
                coro = hit[0]()
                return hit if coro is not None and coro.cr_frame is back else None
            back = back.f_back
        return None

    def raw_context(self) -> object:
        """The OpenTelemetry context object right now (None when the bridge is off)."""
        get = self.monitor.ctx_get
        return get() if get is not None else None


def _self_of(frame: FrameType) -> Any:
    """The ``self`` argument of a method frame that just started."""
    return frame.f_locals.get("self")


class _Remember:
    """``Thread.start`` / ``_WorkItem.__init__``: remember the caller for this object."""

    def __init__(self, handoff: HandOff, table: dict[int, Any]) -> None:
        self.handoff = handoff
        self.table = table

    def on_start(self, frame: FrameType) -> None:
        """Remember the innermost open record for the object being started."""
        self.handoff.remember(self.table, _self_of(frame), None)

    def on_end(self) -> Any:
        """Nothing to do at the end: stop being told."""
        return DISABLE


class _Adopt:
    """``_bootstrap_inner`` / ``_WorkItem.run``: adopt the remembered parent in this thread."""

    def __init__(self, handoff: HandOff, table: dict[int, Any], until_end: bool) -> None:
        self.handoff = handoff
        self.table = table
        self.until_end = until_end

    def on_start(self, frame: FrameType) -> None:
        """Make the remembered record this thread's base parent."""
        owner = _self_of(frame)
        hit = self.table.pop(id(owner), None)
        monitor = self.handoff.monitor
        # threading registers the thread only after this: its name is told here
        name = owner.name if not self.until_end and isinstance(owner, threading.Thread) else None
        if hit is not None and hit[0]() is owner:
            monitor.adopt(hit[1], self.handoff.raw_context(), name)
        else:  # started or submitted by untraced code: not the child of whoever started it
            monitor.adopt(None, None, name)

    def on_end(self) -> Any:
        """A work item or a thread ended: nobody's child any more; a thread is forgotten."""
        self.handoff.monitor.release(thread_ends=not self.until_end)
        return None


class _RememberTask:
    """``BaseEventLoop.create_task``: remember the creator for the coroutine's frame."""

    def __init__(self, handoff: HandOff) -> None:
        self.handoff = handoff

    def on_start(self, frame: FrameType) -> None:
        """Key the creator by the coroutine's frame, which its first ``PY_START`` will see."""
        coro = frame.f_locals.get("coro")
        if type(coro) is not types.CoroutineType:
            return
        cr_frame = coro.cr_frame
        if cr_frame is None:
            return
        parent = self.handoff.open_call()
        if parent is None:
            return
        # the task copies the current context, so this is what its first call will see
        self.handoff.store(self.handoff.pending_tasks, id(cr_frame),
                           (weakref.ref(coro), parent, self.handoff.raw_context()))

    def on_end(self) -> Any:
        """Nothing to do at the end."""
        return DISABLE


class _ChildFlush:
    """Before a forked worker sends a result, and as a ``Process`` child ends: flush."""

    def __init__(self, handoff: HandOff) -> None:
        self.handoff = handoff

    def on_start(self, frame: FrameType) -> None:
        """A result is about to be pickled (``_bootstrap``'s start does nothing)."""
        flush = self.handoff.child_flush
        if flush is not None and frame.f_code.co_name == "dumps":
            flush()

    def on_end(self) -> Any:
        """A ``Process`` child's ``_bootstrap`` returns (``dumps`` returning: nothing to do)."""
        flush = self.handoff.child_flush
        if flush is not None:
            flush()
        return None


class _ChildEnvironment:
    """Child process launches: hand the consumer's variables (``TRACEPARENT``) to the child."""

    def __init__(self, handoff: HandOff) -> None:
        self.handoff = handoff
        self.saved = threading.local()

    def on_start(self, frame: FrameType) -> None:
        """Add the variables to the environment the child will get."""
        provide = self.handoff.child_env
        if provide is None:
            return
        extra = provide()
        if not extra:
            return
        env = frame.f_locals.get("env") if frame.f_code.co_name == "_execute_child" else None
        if env is None:
            previous = {key: os.environ.get(key) for key in extra}
            os.environ.update(extra)
            self.saved.__dict__.setdefault("stack", []).append(previous)
        elif sys.version_info >= (3, 13) and all(isinstance(k, str) for k in env):
            frame.f_locals["env"] = {**extra, **env}  # a copy: the caller's mapping is untouched

    def on_end(self) -> Any:
        """Put ``os.environ`` back as it was before the launch."""
        stack = self.saved.__dict__.get("stack")
        if stack:
            for key, value in stack.pop().items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return None
