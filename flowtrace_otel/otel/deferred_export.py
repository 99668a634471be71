"""An exporter made at its first export, on the export thread, from modules imported earlier.

The OTLP exporters import their transport (``requests``/``urllib3`` or ``grpc``) and protobuf:
100-300 ms here. Imported at start-up, every process with ``FLOWTRACE_OTEL=1`` would pay it;
so the modules are imported when the private pipeline is built (the first traced call, with the
SDK), on that thread, and :class:`DeferredExporter` builds the exporter object itself at its
first export, on the batch processor's own thread.

Why not import on the export thread too: imports share the program's global state, and the
program runs meanwhile. ``warnings.filters`` is the one that bit: pytest swaps it around every
test (``catch_warnings``), and with ``filterwarnings = error`` an import of ``requests`` on the
export thread had the ``ignore`` filter it had just added for urllib3's ``DependencyWarning``
swapped away before the warning came, so the exporter could not be built and nothing was
exported (toolz's own suite, 3 runs in 24; ``tests/test_import_thread.py``). Warnings raised by
such imports would also land in the program's recorded warnings. On the thread that builds the
pipeline, an import sees one consistent state, as if the program had imported the module itself.
What the exporters still import at their first export is the standard library's ``netrc`` and
``concurrent.futures.thread`` (measured on the newest and the oldest supported SDK).
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

#: per OTLP protocol: the modules its exporter imports, imported when the pipeline is built (the
#: gRPC exporter's module imports ``opentelemetry.sdk._logs``, which starts a thread pool: it could
#: not be imported by the flush at exit either)
IMPORTED_WITH_PIPELINE: dict[str, tuple[str, ...]] = {
    "grpc": ("opentelemetry.sdk._logs", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
             "flowtrace_otel.otel.grpc_export"),
    "http/protobuf": ("requests", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                      "flowtrace_otel.otel.encoding"),
}
#: exporters built so far in this process (see :func:`keep_keyboard_interrupt_exit`)
builds = 0
_PY_FILE_INPUT = 257  # Python.h's Py_file_input


class DeferredExporter(SpanExporter):
    """A ``SpanExporter`` that calls ``make`` to build the real one when it first exports."""

    def __init__(self, make: Callable[[], SpanExporter], modules: Sequence[str] = ()) -> None:
        """Build nothing yet; import ``modules`` now, on this thread (the module doc says why).

        A module that cannot be imported is said once, at the first export, as a failed build.
        """
        self._make = make
        self._exporter: SpanExporter | None = None
        self._failed = False
        self._import_error: Exception | None = None
        self._lock = threading.Lock()
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as error:  # e.g. the exporter package is not installed
                self._import_error = error
                break

    def exporter(self) -> SpanExporter | None:
        """The real exporter, built on first call; None if it cannot be built (said once)."""
        if self._exporter is None and not self._failed:
            with self._lock:
                if self._exporter is None and not self._failed:
                    global builds
                    try:
                        if self._import_error is not None:
                            raise self._import_error
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
