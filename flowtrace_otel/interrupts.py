"""Tell the program's interrupts from the tracer's own errors.

Signal handlers run at bytecode boundaries, and the pure-Python core's callbacks are bytecode:
a Ctrl-C (``KeyboardInterrupt``), a ``SIGALRM`` handler's ``TimeoutError`` or a handler's
``sys.exit`` often fires *inside* a callback or inside code the tracer runs for the program
(capture, the OTel runtime context). Such an exception belongs to the program: it must go on
into the program's code at once, never be contained as a tracer error. The tracer itself only
raises ``Exception`` subclasses, and only from its own frames; so an exception is the
program's when it is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``) or when one
of its traceback's frames runs a signal handler that is installed now.
"""

from __future__ import annotations

import functools
import inspect
import signal
from types import BuiltinFunctionType, CodeType, FunctionType, MethodType
from typing import cast

__all__ = ["program_exception"]


def program_exception(error: BaseException) -> BaseException | None:
    """``error`` with the tracer's frames cut from its traceback, if it is the program's; else None.

    The program's: an interrupt (not an ``Exception``) or an exception raised by a signal
    handler that is installed now. Its traceback keeps the handler's frames only; re-raised
    from a callback, it gains that one callback frame, then the program's own frames as it
    unwinds, as without tracing (the native core adds no frame at all).
    """
    handlers = _handler_codes()
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code not in handlers:
        tb = tb.tb_next
    if tb is None and isinstance(error, Exception):
        return None  # raised by the tracer's own code: the tracer's error
    return error.with_traceback(tb)


def _handler_codes() -> set[CodeType]:
    """The code objects of the Python-level signal handlers installed now (cold path)."""
    codes: set[CodeType] = set()
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (ValueError, OSError):  # pragma: no cover - a signal this platform refuses
            continue
        code = _code_of(handler)
        if code is not None:
            codes.add(code)
    return codes


def _code_of(handler: object) -> CodeType | None:
    """The code object a handler runs (function, method, partial, callable object), statically."""
    for _ in range(4):  # unwrap partial(method(function)) and the like, boundedly
        # type() checks, never isinstance(): that may read a user-defined __class__
        if type(handler) is FunctionType:  # functions and methods cannot be subclassed
            return handler.__code__
        if type(handler) is MethodType:
            handler = handler.__func__
        elif issubclass(type(handler), functools.partial):
            handler = cast("functools.partial[object]", handler).func
        elif callable(handler) and not issubclass(type(handler), BuiltinFunctionType):
            # an object with __call__: found on its class without running any of its code
            handler = inspect.getattr_static(type(handler), "__call__", None)
        else:
            return None
    return None
