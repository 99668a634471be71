"""Which core records calls: the C extension or the pure-Python reference, chosen once.

Like coverage.py's ``COVERAGE_CORE``: ``FLOWTRACE_OTEL_CORE=native|python`` asks for a core;
unset means "the best one available".  The C extension is imported once, here; if it is
missing (no compiler at install time, a failed build) its import error's text is kept for
diagnostics (``flowtrace-otel --version``).

The native core (:mod:`flowtrace_otel.native_monitor`) is the reference monitor with its
``PY_START``/``PY_RETURN`` hot path in C (``_native.HotPath``); it also renders captured values
in C (``capture.py`` uses the C capturer unless ``FLOWTRACE_OTEL_CORE=python``).  It is the
default where the extension imports; the pure-Python core records when it does not, or when
``FLOWTRACE_OTEL_CORE=python`` asks for it (docs/native.md).

:func:`new_monitor` is how a session gets a monitor: of the chosen core's class, with the
hand-offs (:mod:`flowtrace_otel.handoff`) wired to it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowtrace_otel.capture import Capturer
    from flowtrace_otel.filters import CodeFilter
    from flowtrace_otel.monitor_protocol import CallMonitor

from flowtrace_otel import _settings

CORE_ENV = "FLOWTRACE_OTEL_CORE"
"""Environment variable naming the core: ``native`` or ``python`` (unset: the best available)."""

NATIVE = "native"
PYTHON = "python"
CORES = (NATIVE, PYTHON)

_NATIVE_MODULE = "flowtrace_otel._native"

# The cores that can record a session, best first (native only where the extension imports).
_RECORDING_CORES = (NATIVE, PYTHON)


class CoreUnavailable(RuntimeError):
    """The core asked for by FLOWTRACE_OTEL_CORE cannot run here (the message says why)."""


@dataclass(frozen=True)
class CoreChoice:
    """The outcome of choosing a core: what records, and what the C extension can do."""

    recording: str
    """The core that records calls: ``"python"`` or ``"native"``."""
    requested: str | None
    """The valid value of FLOWTRACE_OTEL_CORE, or None when unset or invalid."""
    native: ModuleType | None
    """The imported C extension, or None when it is not available."""
    native_error: str | None
    """Why the C extension did not import (None when it did)."""

    def describe(self) -> str:
        """One line for ``--version`` and diagnostics, e.g. ``python (native: not built: ...)``."""
        if self.native is None:
            native = f"native: not built: {self.native_error}"
        elif self.recording == NATIVE:
            native = "native: hot path of calls and value capture in C"
        else:  # built, so only asking for python makes the Python core record
            native = f"native: available, not used: {CORE_ENV}=python"
        return f"{self.recording} ({native})"


def import_native() -> ModuleType:
    """Import the C extension (raises ImportError when it was not built)."""
    module = importlib.import_module(_NATIVE_MODULE)
    # Without the built file, the source folder flowtrace_otel/_native/ imports as an empty
    # namespace package: that is "not built", not a C core.
    if getattr(module, "__file__", None) is None:
        raise ImportError(f"{_NATIVE_MODULE} was not built (only its C sources are here)")
    return module


def choose_core(environ: Mapping[str, str] | None = None,
                importer: Callable[[], ModuleType] = import_native) -> CoreChoice:
    """Choose the core from the environment; raises CoreUnavailable for an impossible ask."""
    # the one rule of every setting: a bad value is one line on stderr and means "unset"
    # (never a warning the program's filters could turn into its exception)
    requested: str | None = _settings.read(CORE_ENV, environ)
    native: ModuleType | None
    try:
        native = importer()
        error = None
    except ImportError as exc:
        native, error = None, str(exc) or type(exc).__name__
    if requested == NATIVE and native is None:
        raise CoreUnavailable(f"{CORE_ENV}=native asked for the C core, "
                              f"but it is not available: {error}")
    if requested is not None and requested in _RECORDING_CORES:
        recording = requested
    else:
        available = [c for c in _RECORDING_CORES if c == PYTHON or native is not None]
        recording = available[0]
    return CoreChoice(recording=recording, requested=requested, native=native,
                      native_error=error)


_chosen: CoreChoice | None = None


def current_core() -> CoreChoice:
    """The process's core, chosen on first use (a bad FLOWTRACE_OTEL_CORE warns once)."""
    global _chosen
    if _chosen is None:
        _chosen = choose_core()
    return _chosen


def recording_cores(choice: CoreChoice | None = None) -> tuple[str, ...]:
    """The cores that can record sessions here, best first (the conformance suite runs each)."""
    native = (choice or current_core()).native is not None
    return tuple(c for c in _RECORDING_CORES if c == PYTHON or native)


def monitor_class(recording: str) -> Callable[..., CallMonitor]:
    """The monitor class of the core named ``recording`` (one of ``_RECORDING_CORES``)."""
    if recording == PYTHON:
        from flowtrace_otel.monitoring import Monitor  # noqa: PLC0415 - the core, once chosen

        return Monitor
    if recording == NATIVE:
        from flowtrace_otel.native_monitor import NativeMonitor  # noqa: PLC0415 - once chosen

        return NativeMonitor
    raise CoreUnavailable(f"the {recording} core cannot record sessions yet")


def new_monitor(code_filter: CodeFilter, capture: Capturer, capture_args: bool,
                capture_result: bool, redact: tuple[str, ...],
                recording: str | None = None) -> CallMonitor:
    """A monitor of the chosen core (or of ``recording``) with the hand-offs wired to it."""
    from flowtrace_otel.handoff import HandOff  # noqa: PLC0415 - consumes the monitor

    make = monitor_class(recording or current_core().recording)
    monitor = make(code_filter, capture, capture_args, capture_result, redact)
    monitor.handoff = HandOff(monitor)
    return monitor
