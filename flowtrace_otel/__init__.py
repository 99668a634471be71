"""flowtrace_otel: see what a Python program did, as a call tree or as OpenTelemetry spans.

The core (this package minus :mod:`flowtrace_otel.otel`) uses the standard library only.
"""

from typing import TYPE_CHECKING, Any

from flowtrace_otel._options import Options as Options
from flowtrace_otel.events import CallEvent as CallEvent
from flowtrace_otel.exports import to_folded as to_folded
from flowtrace_otel.exports import to_perfetto as to_perfetto
from flowtrace_otel.formatters import format_tree as format_tree
from flowtrace_otel.formatters import print_tree as print_tree
from flowtrace_otel.formatters import to_json as to_json
from flowtrace_otel.monitoring import ToolIdTaken as ToolIdTaken
from flowtrace_otel.session import TraceSession as TraceSession
from flowtrace_otel.session import TracingConflict as TracingConflict
from flowtrace_otel.session import active_tracing as active_tracing
from flowtrace_otel.session import config as config
from flowtrace_otel.session import get_config as get_config
from flowtrace_otel.session import get_trace_data as get_trace_data
from flowtrace_otel.session import start_tracing as start_tracing
from flowtrace_otel.session import stop_tracing as stop_tracing
from flowtrace_otel.session import trace as trace

if TYPE_CHECKING:
    from flowtrace_otel.html import to_html as to_html


def __getattr__(name: str) -> Any:
    """``to_html`` is imported on first use (the HTML module is not needed to trace)."""
    if name == "to_html":
        from flowtrace_otel.html import to_html  # noqa: PLC0415

        return to_html
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext flowtrace_otel``: register the ``%%flowtrace`` and ``%flowtrace`` magics."""
    from flowtrace_otel import magic  # noqa: PLC0415 - IPython is imported only when asked

    magic.load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext flowtrace_otel``: stop tracing cells."""
    from flowtrace_otel import magic  # noqa: PLC0415

    magic.unload(ipython)


__all__ = [
    "CallEvent", "Options", "ToolIdTaken", "TraceSession", "TracingConflict", "active_tracing",
    "config", "format_tree", "get_config", "get_trace_data", "load_ipython_extension",
    "print_tree", "start_tracing", "stop_tracing", "to_folded", "to_html", "to_json",
    "to_perfetto", "trace", "unload_ipython_extension",
]
__version__ = "0.1.0"
