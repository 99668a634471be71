"""Shared fixtures: a clean configuration per test and helpers to trace sample code."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flowtrace_otel import _options, monitoring, session
from flowtrace_otel.events import CallEvent
from flowtrace_otel.formatters import format_tree

_DURATION = re.compile(r"\[\d+\.\d{6}s\]")


def masked(text: str) -> str:
    """``text`` with every duration replaced by ``[..s]`` (the tree is otherwise exact)."""
    return _DURATION.sub("[..s]", text)


@pytest.fixture(autouse=True)
def _clean_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from the documented defaults and may warn again; nothing leaks."""
    for name in [*_options.ENV_VARS, "NO_COLOR", "FLOWTRACE_OTEL_DEBUG"]:
        monkeypatch.delenv(name, raising=False)
    session.reset_config()
    _options._warned.clear()
    yield
    session.stop_tracing()
    session.reset_config()
    _options._warned.clear()


@pytest.fixture(autouse=True)
def _internal_errors_are_loud(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test fails if the tracer contained an internal error in this process during it."""
    before = len(monitoring.CONTAINED_ERRORS)
    yield
    new = monitoring.CONTAINED_ERRORS[before:]
    if new and request.node.get_closest_marker("internal_errors_expected") is None:
        pytest.fail(f"the tracer contained internal errors: {new!r}")


@pytest.fixture
def traced() -> Callable[..., list[CallEvent]]:
    """``traced(fn, *args, raises=None, **options)``: the events of ``fn`` in a fresh session."""

    def run(fn: Callable[..., Any], *args: Any, raises: type[BaseException] | None = None,
            **options: Any) -> list[CallEvent]:
        """Only the exception named by ``raises`` is expected (and required); others fail."""
        with session.TraceSession(**options) as recorder:
            if raises is None:
                fn(*args)
            else:
                with pytest.raises(raises):
                    fn(*args)
        return recorder.events

    return run


@pytest.fixture
def tree(traced: Callable[..., list[CallEvent]]) -> Callable[..., str]:
    """``tree(fn, *args)``: the masked tree of running ``fn``, without results."""

    def run(fn: Callable[..., Any], *args: Any, raises: type[BaseException] | None = None,
            **show: Any) -> str:
        return masked(format_tree(traced(fn, *args, raises=raises), **show))

    return run
