"""``FLOWTRACE_OTEL=1`` without importing OpenTelemetry at start-up.

Start-up only attaches the monitor (standard library) with a :class:`DeferredBridge` as its
consumer. What OpenTelemetry needs comes when it is needed:

* the bridge, the API and the SDK: when the first trace starts (the first traced call), by
  :meth:`DeferredBridge.on_root`;
* the call-aware runtime context (:mod:`flowtrace_otel.otel.context`): the moment
  ``opentelemetry.context`` has been imported, by whoever imports it (the application,
  ``opentelemetry-instrument``'s ``sitecustomize``, or the bridge itself), watched by
  :class:`ContextImportWatch`, so library spans made before our first trace already nest;
* the exporter, its transport and protobuf: on the export thread, at the first export
  (:mod:`flowtrace_otel.otel.deferred_export`).

Until ``opentelemetry.context`` is imported no library span can be current, so the monitor
records :data:`NOTHING` as each call's raw context; afterwards it records the context attached
in the API's ``ContextVar``, or :data:`NOTHING` while none is, so records made before and after
the import compare alike. This module imports nothing from OpenTelemetry.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowtrace_otel.interrupts import program_exception

if TYPE_CHECKING:
    from flowtrace_otel import records as r
    from flowtrace_otel._options import Options
    from flowtrace_otel.monitor_protocol import CallMonitor
    from flowtrace_otel.otel.bridge import Bridge

CONTEXT_MODULE = "opentelemetry.context"


class EmptyContext(dict[str, object]):
    """An empty, read-only mapping that OpenTelemetry's API reads as an empty ``Context``."""

    def __setitem__(self, key: str, value: object) -> None:
        """Refuse, as ``Context`` does."""
        raise ValueError


#: the raw context of a call started while no OpenTelemetry context was attached
NOTHING = EmptyContext()


def nothing_getter() -> Callable[[], object]:
    """A C-level callable returning :data:`NOTHING` (the monitor's context reader until then)."""
    return itertools.repeat(NOTHING).__next__


class ContextImportWatch:
    """A ``sys.meta_path`` finder that calls ``on_import`` once ``opentelemetry.context`` ran.

    It finds nothing itself: for that one module it asks the finders after it, and has the
    loader it got report back after executing the module. Every other import costs one call.
    """

    def __init__(self, on_import: Callable[[], None]) -> None:
        """Remember what to call."""
        self.on_import = on_import

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        """For ``opentelemetry.context`` only: the real spec, its loader told to report back."""
        if name != CONTEXT_MODULE:
            return None
        spec = None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            """Execute the module, then report (only if it executed)."""
            try:
                run(module)
            finally:
                loader.__dict__.pop("exec_module", None)
            self.stop()
            self.on_import()

        try:
            loader.exec_module = exec_module  # this loader object serves this one import
        except AttributeError:  # pragma: no cover - a loader without an instance dict
            return spec
        return spec

    def start(self) -> None:
        """Watch from now on (first in ``sys.meta_path``)."""
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def stop(self) -> None:
        """Stop watching."""
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


class DeferredBridge:
    """The monitor's consumer under ``FLOWTRACE_OTEL=1``: becomes the bridge at the first trace.

    Once built, the bridge's own methods are set on this object and the monitor rebuilds its
    callbacks, so the hot path calls the bridge directly, without a forwarding call.
    """

    def __init__(self, options: Options, build: Callable[[Options], Bridge]) -> None:
        """Nothing is imported until the first trace starts."""
        self.options = options
        self.build = build
        self.bridge: Bridge | None = None
        self.monitor: CallMonitor | None = None
        self.failed = False
        self._lock = threading.Lock()

    def on_root(self, rec: r.Record) -> bool:
        """Build the bridge (once), then let it start the trace."""
        bridge = self.bridge or self._build()
        return bridge.on_root(rec) if bridge is not None else False

    def on_end(self, rec: r.Record) -> None:
        """Only a trace the bridge started is recorded, so the bridge exists here."""
        if self.bridge is not None:
            self.bridge.on_end(rec)

    def wants_values(self, parent: r.Record | None, info: r.CodeInfo) -> bool:
        """The bridge's answer, once it exists."""
        return self.bridge.wants_values(parent, info) if self.bridge is not None else True

    def context_for(self, rec: r.Record) -> Any:
        """The bridge's (asked only about recorded calls, so after it was built)."""
        assert self.bridge is not None
        return self.bridge.context_for(rec)

    def _build(self) -> Bridge | None:
        """Import OpenTelemetry and make the bridge; on failure, say so once and record nothing."""
        with self._lock:
            if self.bridge is not None or self.failed:
                return self.bridge
            try:
                bridge = self.build(self.options)
            except Exception as error:  # the program must go on whatever happens here
                mine = program_exception(error)
                if mine is not None:  # a signal handler's exception (a SIGALRM timeout): the
                    raise mine from None  # program's, raised during the build; build again later
                self.failed = True
                print(f"flowtrace_otel: tracing not started: {error!r}", file=sys.stderr)
                return None
            self.on_root = bridge.on_root  # type: ignore[method-assign]
            self.on_end = bridge.on_end  # type: ignore[method-assign]
            self.wants_values = bridge.wants_values  # type: ignore[method-assign]
            self.context_for = bridge.context_for  # type: ignore[method-assign]
            self.bridge = bridge
        monitor = self.monitor
        if monitor is not None:
            monitor.set_consumers(list(monitor.consumers))  # callbacks call the bridge directly
        return bridge
