"""``FLOWTRACE_OTEL=1``: start tracing from interpreter start-up, flush at exit.

Called by the one-line ``flowtrace_otel.pth`` in site-packages only when the variable is set
(otherwise nothing is imported). Safe to call twice (a venv's ``.pth`` runs twice here). It
never replaces the global TracerProvider: ``opentelemetry-instrument`` and applications set
theirs later, and the bridge picks it up when the first trace starts.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

_started = False


def start() -> None:
    """Turn tracing on if ``FLOWTRACE_OTEL`` says so; never raise into start-up."""
    global _started
    if _started:
        return
    _started = True
    from flowtrace_otel import _settings  # noqa: PLC0415 - the one parser (a bad value warns)

    if not _settings.read("FLOWTRACE_OTEL"):
        return
    try:
        from flowtrace_otel.otel import instrument_for_tool, pipeline  # noqa: PLC0415

        if pipeline.sdk_disabled():
            return
        instrument_for_tool()
        pipeline.preload()
    except Exception as error:  # the program must start whatever happens here
        print(f"flowtrace_otel: tracing not started: {error}", file=sys.stderr)
        return
    _flush_on_sigterm()  # instrument() registered the stop and flush at exit


def _flush_on_sigterm() -> None:
    """If SIGTERM has its default action, flush first, then die by SIGTERM as before."""
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        return
    os.register_at_fork(after_in_child=_default_sigterm_in_fork_child)


def _default_sigterm_in_fork_child() -> None:
    """A forked child (a pool worker) dies by SIGTERM at once, as untraced.

    ``Pool.terminate()`` ends its workers with SIGTERM, possibly while they wait on a lock
    the parent holds: a handler that first flushes would delay each worker by up to the exit
    bound, or run Python code in a process that is expected to be gone.
    """
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # pragma: no cover - fork from a thread that is not the main one
        pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Flush, restore the default action and re-deliver the signal."""
    from flowtrace_otel.otel import _stop_and_flush  # noqa: PLC0415

    _stop_and_flush()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
