"""``FLOWTRACE_OTEL=1``: start tracing from interpreter start-up, flush at exit.

Called by the one-line ``flowtrace_otel.pth`` in site-packages only when the variable is set
(otherwise nothing is imported). Safe to call twice (a venv's ``.pth`` runs twice here). It
imports no OpenTelemetry module: the bridge, the SDK and the exporter come when they are first
needed (:mod:`flowtrace_otel.otel.deferred`). It never replaces the global TracerProvider:
``opentelemetry-instrument`` and applications set theirs later, and the bridge picks it up when
the first trace starts.
"""

from __future__ import annotations

import os
import sys

_started = False
#: True in a process forked from one where start-up tracing began (OpenTelemetry and the
#: export queue may not be imported yet when it forks: a Pool made before the first call)
forked = False


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
        if sdk_disabled():
            return
        from flowtrace_otel import sigterm  # noqa: PLC0415
        from flowtrace_otel.otel import _stop_and_flush, instrument_on_first_trace  # noqa: PLC0415

        instrument_on_first_trace()
    except Exception as error:  # the program must start whatever happens here
        print(f"flowtrace_otel: tracing not started: {error}", file=sys.stderr)
        return
    sigterm.flush_on_sigterm(_stop_and_flush)  # exit was registered by the instrumentation
    os.register_at_fork(after_in_child=_mark_forked)


def _mark_forked() -> None:
    """In a fork child: remember it (see :data:`forked`)."""
    global forked
    forked = True


def sdk_disabled() -> bool:
    """``OTEL_SDK_DISABLED=true``: the bridge stays off (read here: the SDK is not imported)."""
    raw = os.environ.get("OTEL_SDK_DISABLED")
    if raw is None:
        return False
    from flowtrace_otel._options import parse_bool  # noqa: PLC0415

    return parse_bool("OTEL_SDK_DISABLED", raw, False)
