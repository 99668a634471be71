"""An exporter made at its first export, on the export thread, not when the pipeline is built.

The OTLP exporters import their transport (``requests``/``urllib3`` or ``grpc``) and protobuf
when they are imported or constructed: 100-300 ms here. Built when the private pipeline is
built, that would stall the program's first traced call; wrapped in :class:`DeferredExporter`,
the batch processor's own thread pays it, at its first export (after the batch delay, or when a
batch is full).

If nothing was exported before the program ends, it is built by the flush at exit. By then no
thread can be started, and the gRPC exporter's module imports ``opentelemetry.sdk._logs``,
which runs the resource detectors in a thread pool at import: such modules
(:data:`NEEDED_BEFORE_EXIT`) are imported when the pipeline is built.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("flowtrace_otel")

#: per OTLP protocol: modules its exporter imports that cannot be imported at interpreter exit
NEEDED_BEFORE_EXIT: dict[str, tuple[str, ...]] = {"grpc": ("opentelemetry.sdk._logs",)}
#: exporters built so far in this process (see :func:`keep_keyboard_interrupt_exit`)
builds = 0
_PY_FILE_INPUT = 257  # Python.h's Py_file_input


class DeferredExporter(SpanExporter):
    """A ``SpanExporter`` that calls ``make`` to build the real one when it first exports."""

    def __init__(self, make: Callable[[], SpanExporter], before_exit: Sequence[str] = ()) -> None:
        """Build nothing yet; import the ``before_exit`` modules now."""
        for name in before_exit:
            importlib.import_module(name)
        self._make = make
        self._exporter: SpanExporter | None = None
        self._failed = False
        self._lock = threading.Lock()

    def exporter(self) -> SpanExporter | None:
        """The real exporter, built on first call; None if it cannot be built (said once)."""
        if self._exporter is None and not self._failed:
            with self._lock:
                if self._exporter is None and not self._failed:
                    global builds
                    try:
                        self._exporter = self._make()
                    except Exception as error:
                        self._failed = True
                        log.warning("flowtrace_otel: spans could not be exported: the exporter "
                                    "could not be built: %r", error)
                    finally:
                        # counted once built: a build begun before exit (on the export thread)
                        # and ended during the exit flush still counts as an import at exit
                        builds += 1
        return self._exporter

    @property
    def last_failure(self) -> str:
        """Why the real exporter's last export failed, if it says ('' otherwise)."""
        if self._failed:
            return "the exporter could not be built"
        return str(getattr(self._exporter, "last_failure", "") or "")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through the real exporter."""
        exporter = self.exporter()
        if exporter is None:
            return SpanExportResult.FAILURE
        return exporter.export(spans)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Shut the real exporter down, if it was ever built."""
        exporter = self._exporter
        if exporter is None:
            return
        if "timeout_millis" in inspect.signature(exporter.shutdown).parameters:
            exporter.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the real exporter, if it was ever built."""
        exporter = self._exporter
        return True if exporter is None else exporter.force_flush(timeout_millis)


def keep_keyboard_interrupt_exit() -> None:
    """After an exporter was built at exit: die by SIGINT as python would, if it was to.

    A program ended by an uncaught ``KeyboardInterrupt`` dies by SIGINT after finalization;
    CPython keeps that in a flag which evaluating code through ``PyRun_String`` resets, and
    importing some modules does so (on 3.12 ``json``, on 3.12 and 3.13 ``requests``): an
    exporter built by the flush at exit would turn the exit status into 1. The flag is set again
    the way CPython sets it, by evaluating ``raise KeyboardInterrupt`` through ``PyRun_String``
    (nothing is printed; the exception is caught here).
    """
    if not isinstance(getattr(sys, "last_value", None), KeyboardInterrupt):
        return
    try:
        import ctypes  # noqa: PLC0415 - only in this rare case

        run = ctypes.pythonapi.PyRun_String
        run.restype = ctypes.py_object
        run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
        run(b"raise KeyboardInterrupt", _PY_FILE_INPUT, {}, {})
    except KeyboardInterrupt:
        pass
    except Exception as error:  # no ctypes: the exit status stays 1
        log.debug("flowtrace_otel: exit status after KeyboardInterrupt not kept: %r", error)
