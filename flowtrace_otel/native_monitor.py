"""The native core: the reference monitor with its hot path in C.

:class:`NativeMonitor` is the Python monitor whose two hottest callbacks, ``PY_START`` and
``PY_RETURN``, are the methods of a C ``flowtrace_otel._native.HotPath``. The C code runs the
common path of the Python callbacks (a decided code object, a call with a parent, a ghost of an
unrecorded trace, a plain return) on the very same objects: the monitor's thread states and
stacks, :class:`~flowtrace_otel.records.Record` instances with every field set, the same
capturer and consumers. Every other case (a code object met for the first time, a root the
consumers must see, hand-off hooks and coroutines, parked generators to sweep, a thread's first
event) is handed to the Python callback, which does the whole event with the reference
semantics; the other five events stay Python. So the two cores produce the same records and the
conformance suite holds them to it (``tests/test_conformance.py``); docs/native.md says more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowtrace_otel import monitoring
from flowtrace_otel.interrupts import program_exception
from flowtrace_otel.records import CodeInfo, Record, ThreadState


class NativeMonitor(monitoring.Monitor):
    """The Python monitor with ``PY_START``/``PY_RETURN`` in C (``_native.HotPath``)."""

    _hot: Any = None

    def _register(self) -> None:
        """Build the Python callbacks, put the C ones in front of the two hottest, register."""
        from flowtrace_otel import core  # noqa: PLC0415 - the extension, imported once there

        native = core.import_native()
        callbacks = monitoring._make_callbacks(self)
        consumers = tuple(self.consumers)
        wants_values = (getattr(consumers[0], "wants_values", None)
                        if len(consumers) == 1 else None)
        hot = native.HotPath(
            py_start=callbacks["PY_START"], py_return=callbacks["PY_RETURN"], tls=self.tls,
            thread_state=self.thread_state, infos=self.infos, ids=self._ids,
            ctx_get=self.ctx_get, capture=self.capture.call,
            on_ends=tuple(c.on_end for c in consumers), wants_values=wants_values,
            contain=self._contain, disable=monitoring.DISABLE,
            capture_args=self.capture_args, capture_result=self.capture_result,
            record_type=Record, info_type=CodeInfo, state_type=ThreadState)
        callbacks["PY_START"] = hot.py_start
        callbacks["PY_RETURN"] = hot.py_return
        self._close_hot()
        self._hot = hot
        self._register_callbacks(callbacks)

    def stop(self) -> None:
        """Switch off as the Python monitor does; the C callbacks ignore any late event."""
        super().stop()
        self._close_hot()

    def _close_hot(self) -> None:
        """Retire the current HotPath (its callbacks are being replaced or removed)."""
        hot, self._hot = self._hot, None
        if hot is not None:
            hot.close()

    def _contain(self, error: BaseException) -> BaseException | None:
        """An error in the C callbacks: the program's exception to raise, or None (contained).

        The Python callbacks' rule (:mod:`flowtrace_otel.interrupts`): a signal handler's
        exception is the program's and goes on; anything else is the tracer's, contained.
        """
        mine = program_exception(error)
        if mine is not None:
            return mine
        self.internal_error(error)
        return None

    @property
    def hot_path(self) -> Callable[..., Any] | None:
        """The C callbacks now registered (None when stopped): for tests and diagnostics."""
        hot: Callable[..., Any] | None = self._hot
        return hot
