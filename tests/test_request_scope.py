"""Request scope, in process: a root after a request span ended joins it only inside its call.

The real case (Flask's ``teardown_appcontext`` under opentelemetry-instrument) is tested end to
end in ``tests/test_otel_flask.py``; these check the rules on plain WSGI callables.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import SpanContext, TraceFlags, get_current_span

from flowtrace_otel.otel.request_scope import RequestScope

REQUEST = SpanContext(0xA1, 0xB1, False, TraceFlags(TraceFlags.SAMPLED))
INNER = SpanContext(0xA1, 0xB2, False, TraceFlags(TraceFlags.SAMPLED))


class StartResponse:
    """A per-request ``start_response`` (weakly referenceable, as werkzeug's and wsgiref's)."""

    def __call__(self, status: str, headers: list[tuple[str, str]]) -> None:
        """Nothing to send."""


def wsgi_call(body: Callable[[], Any], start_response: Any = None) -> Any:
    """Run ``body`` inside a WSGI application call, as a server would."""

    def application(environ: dict[str, Any], start_response: Any) -> Any:
        return body()

    return application({}, start_response if start_response is not None else StartResponse())


def parent_span(scope: RequestScope) -> SpanContext | None:
    """The span a late root would get as parent now, if any."""
    context = scope.parent()
    return None if context is None else get_current_span(context).get_span_context()


def test_a_late_root_in_the_same_call_gets_the_request_span() -> None:
    scope = RequestScope()

    def request() -> SpanContext | None:
        scope.enter(REQUEST)  # the request span, seen while it was current
        return parent_span(scope)  # later, in the same call, with no span current

    assert wsgi_call(request) == REQUEST


def test_the_next_request_on_the_same_thread_does_not_inherit_it() -> None:
    scope = RequestScope()
    wsgi_call(lambda: scope.enter(REQUEST))
    assert wsgi_call(lambda: parent_span(scope)) is None
    assert parent_span(scope) is None  # outside any request


def test_a_span_opened_inside_the_request_does_not_replace_its_span() -> None:
    scope = RequestScope()

    def request() -> SpanContext | None:
        scope.enter(REQUEST)
        scope.enter(INNER)  # a user's span inside the request
        return parent_span(scope)

    assert wsgi_call(request) == REQUEST


def test_no_request_scope_outside_a_wsgi_call() -> None:
    scope = RequestScope()
    scope.enter(REQUEST)  # a span in a script: no WSGI call on the stack
    assert parent_span(scope) is None


def test_other_threads_do_not_see_it() -> None:
    scope = RequestScope()
    seen: list[SpanContext | None] = []

    def request() -> None:
        scope.enter(REQUEST)
        worker = threading.Thread(target=lambda: seen.append(wsgi_call(lambda: parent_span(scope))))
        worker.start()
        worker.join()

    wsgi_call(request)
    assert seen == [None]


def test_nothing_of_the_request_is_kept_alive() -> None:
    scope = RequestScope()
    start_response = StartResponse()
    gone = weakref.ref(start_response)
    wsgi_call(lambda: scope.enter(REQUEST), start_response)
    del start_response
    gc.collect()
    assert gone() is None
