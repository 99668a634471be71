"""Request scope: calls that run after a request's span ended, still inside its WSGI call.

opentelemetry-instrumentation-flask starts the request span in a ``before_request`` hook and
ends (and detaches) it in a ``teardown_request`` hook that runs after the app's own. Flask then
tears the app context down: ``teardown_appcontext`` functions (the tutorial's ``close_db``) run
with no span current, still inside ``Flask.wsgi_app``. Without help each would start a trace
of its own.

So, per thread: when a span is attached while no traced call is open (the runtime context
tells :func:`attached`; a request span is attached so), or when a root call starts under a
valid span, the outermost WSGI call on the stack (a frame whose last positional parameter is
``start_response``) is remembered with that span's context. The first span seen in a WSGI
call is its request's: a span opened inside it later (a user's) does not replace it. A later
root with no span current gets that span as parent while the same WSGI call is still running:
the same frame is on the stack and holds the same ``start_response``. The span may have ended
already; OpenTelemetry allows a child to end after its parent.

Nothing of the request is kept alive: the frame is known by its id and code object, checked
against a weak reference to its ``start_response`` (a per-request callable in every WSGI server
seen: werkzeug, wsgiref, gunicorn, the Flask instrumentation's wrapper). A ``start_response``
that cannot be weakly referenced turns the scope off for that request. Threads only: an ASGI
application's tasks share a thread and get no request scope.
"""

from __future__ import annotations

import sys
import threading
import weakref
from types import CodeType, FrameType
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, get_current_span, set_span_in_context

from flowtrace_otel.otel.spans import CallSpan

_START_RESPONSE = "start_response"


class _Anchor:
    """The request span seen by a root, and the WSGI call it ran in (if any)."""

    __slots__ = ("code", "frame_id", "span", "start_response")

    def __init__(self, span: SpanContext, frame: FrameType | None, start_response: Any) -> None:
        self.span = span
        self.frame_id = id(frame) if frame is not None else 0
        self.code: CodeType | None = frame.f_code if frame is not None else None
        self.start_response: weakref.ref[Any] | None = start_response


class RequestScope:
    """Per thread: the last request span a root saw, anchored to its WSGI call."""

    def __init__(self) -> None:
        """Nothing remembered yet."""
        self._local = threading.local()

    def enter(self, span: SpanContext) -> None:
        """A root started under ``span``: remember it with the outermost WSGI call running now."""
        anchor: _Anchor | None = getattr(self._local, "anchor", None)
        if anchor is not None and (anchor.span is span or anchor.span == span):
            return  # seen again (another root, a re-attach): the stack was walked already
        frame, start_response = _outermost_wsgi_call(sys._getframe(1))
        ref = None
        if frame is not None:
            if anchor is not None and anchor.frame_id == id(frame) \
                    and anchor.code is frame.f_code and anchor.start_response is not None \
                    and anchor.start_response() is start_response:
                return  # a span opened inside the request (a user's): the request's stays
            try:
                ref = weakref.ref(start_response)
            except TypeError:
                frame = None
        self._local.anchor = _Anchor(span, frame, ref)

    def parent(self) -> Context | None:
        """The remembered span as a parent Context, while its WSGI call still runs here."""
        anchor: _Anchor | None = getattr(self._local, "anchor", None)
        if anchor is None or anchor.start_response is None:
            return None
        start_response = anchor.start_response()
        if start_response is None:  # that request is over
            self._local.anchor = None
            return None
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if id(frame) == anchor.frame_id and frame.f_code is anchor.code:
                if frame.f_locals.get(_START_RESPONSE) is not start_response:
                    return None  # another request's call at the same address
                return set_span_in_context(NonRecordingSpan(anchor.span), Context())
            frame = frame.f_back
        return None


#: the one request scope of this process (per thread inside), shared by every bridge
SCOPE = RequestScope()


def attached(context: Context) -> None:
    """A span current with no traced call open here (attached, or a root's): a request's?"""
    span = get_current_span(context)
    if isinstance(span, CallSpan):
        return  # a call's own span attached again: not a request's
    span_context = span.get_span_context()
    if span_context.is_valid:
        SCOPE.enter(span_context)


def _outermost_wsgi_call(frame: FrameType | None) -> tuple[FrameType | None, Any]:
    """The outermost frame running a WSGI callable ``(environ, start_response)``, and that
    ``start_response`` (a callable: a wrapper with such a parameter set to None is not one)."""
    found: tuple[FrameType | None, Any] = (None, None)
    while frame is not None:
        code = frame.f_code
        count = code.co_argcount
        if count >= 2 and code.co_varnames[count - 1] == _START_RESPONSE:
            start_response = frame.f_locals.get(_START_RESPONSE)
            if callable(start_response):
                found = (frame, start_response)
        frame = frame.f_back
    return found
