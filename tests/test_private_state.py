"""Every private name of CPython or OpenTelemetry that flowtrace_otel reads or writes still exists.

docs/guarantees.md ("What it touches that is not public") lists each one: why it is used and what
breaks if upstream changes it. Each test here is that name's alarm, run against the installed
(pinned in CI) versions: when an upgrade removes or reshapes one, this file says which.
"""

from __future__ import annotations

import argparse
import asyncio.base_events
import concurrent.futures.thread as futures_thread
import contextvars
import ctypes
import subprocess
import sys
import threading
import warnings
from multiprocessing import popen_spawn_posix, process, reduction

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

# --- OpenTelemetry -----------------------------------------------------------------------------


def test_runtime_context_is_a_module_global_over_a_context_var() -> None:
    """otel/context.py swaps ``_RUNTIME_CONTEXT`` and reads its ``_current_context`` variable."""
    runtime = otel_context._RUNTIME_CONTEXT  # type: ignore[attr-defined]
    assert isinstance(runtime._current_context, contextvars.ContextVar)


def test_the_global_tracer_provider_is_a_module_global() -> None:
    """pipeline.application_provider() reads ``trace._TRACER_PROVIDER`` without a lookup."""
    assert hasattr(trace, "_TRACER_PROVIDER")


def test_suppress_instrumentation_key_exists() -> None:
    """The export worker attaches it so exporting makes no spans; the bridge checks it."""
    assert isinstance(otel_context._SUPPRESS_INSTRUMENTATION_KEY, str)


def test_provider_keeps_its_processors_in_a_tuple() -> None:
    """pipeline.shutdown_bounded() and the bridge walk ``_active_span_processor``."""
    provider = TracerProvider(shutdown_on_exit=False)
    processor = BatchSpanProcessor(ConsoleSpanExporter())
    provider.add_span_processor(processor)
    try:
        assert processor in provider._active_span_processor._span_processors
        assert hasattr(processor, "_batch_processor")
    finally:
        provider.shutdown()


def test_readable_span_keeps_its_fields_in_underscore_slots() -> None:
    """The fast encoder reads ReadableSpan's slots directly (it checks them at import too)."""
    span = ReadableSpan(name="probe", start_time=3, end_time=4)
    for name in ("_context", "_parent", "_name", "_kind", "_start_time", "_end_time",
                 "_attributes", "_events", "_links", "_status"):
        assert hasattr(span, name), name


def test_http_exporter_client_computes_a_jittered_backoff() -> None:
    """pipeline._private_jitter() gives the client's backoff our own random generator."""
    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    try:
        client = exporter._client  # type: ignore[attr-defined]
        assert isinstance(client._jitter, float) and callable(client._compute_backoff)
    finally:
        exporter.shutdown()


def test_grpc_exporter_draws_its_jitter_from_the_global_name_random() -> None:
    """pipeline._private_grpc_jitter() copies ``_export`` with ``random`` naming our generator."""
    import types

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )

    from flowtrace_otel.otel import pipeline

    stock = GrpcExporter._export
    assert isinstance(stock, types.FunctionType) and stock.__closure__ is None
    assert "random" in stock.__code__.co_names
    exporter = pipeline._private_grpc_jitter(GrpcExporter(endpoint="http://127.0.0.1:9"))
    try:
        private = exporter._export  # type: ignore[attr-defined]
        assert private.__func__.__globals__["random"] is pipeline._jitter_random
        assert GrpcExporter._export is stock  # the class is untouched
    finally:
        exporter.shutdown()


def test_exporters_log_through_their_module_logger() -> None:
    """The fast encoder logs its failures through the stock exporter module's ``_logger``."""
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    assert hasattr(trace_exporter, "_logger")


# --- CPython -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("owner", "name"), [
    (threading.Thread, "_bootstrap_inner"),
    (subprocess.Popen, "_execute_child"),
    (popen_spawn_posix.Popen, "_launch"),
    (process.BaseProcess, "_bootstrap"),
    (reduction.ForkingPickler, "dumps"),
    (futures_thread._WorkItem, "__init__"),
    (futures_thread._WorkItem, "run"),
    (asyncio.base_events.BaseEventLoop, "create_task"),
])
def test_hand_off_hooks_watch_python_functions(owner: type, name: str) -> None:
    """handoff.py watches these standard-library functions' code objects (never patches them)."""
    assert hasattr(getattr(owner, name), "__code__")


def test_threading_keeps_its_threads_in_active() -> None:
    """The export worker removes the dummy entry logging makes; ThreadState reads names."""
    assert threading.get_ident() in threading._active  # type: ignore[attr-defined]


def test_warnings_filters_mutated_exists_before_3_14() -> None:
    """The one-shot fork-warning filter calls it after editing ``warnings.filters`` (3.14 has
    no such function, and the code calls it only where it exists)."""
    assert sys.version_info >= (3, 14) or callable(warnings._filters_mutated)


def test_pyrun_string_is_reachable_through_ctypes() -> None:
    """deferred_export.keep_keyboard_interrupt_exit() re-sets the interrupt exit flag with it."""
    assert ctypes.pythonapi.PyRun_String is not None


def test_argparse_keeps_actions_in_a_list() -> None:
    """cli.valued_options() derives the options that take a value from ``_actions``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=int)
    sub = parser.add_subparsers()
    assert any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    assert sub is not None
