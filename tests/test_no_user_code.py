"""The tracer never runs user code on captured values, and captures anything in bounded time.

Issue 7.2. Spy objects count every call of the special methods a careless tracer would use
(``__repr__``, ``__str__``, ``__eq__``, ``__hash__``, ``__len__``, ``__iter__``, ``__getattr__``,
``__getattribute__``, properties, a metaclass's ``__getattribute__``, a faked ``__class__``);
they are passed as arguments, returned, raised and caught by traced functions. The count
must stay zero. ``full_repr=True`` is the documented opt-in that does call ``__repr__``.
"""

from __future__ import annotations

import collections
import sys
import tracemalloc
from typing import Any

import pytest

from flowtrace_otel import CallEvent, TraceSession
from flowtrace_otel.capture import Capturer

CALLS: collections.Counter[str] = collections.Counter()


def count(name: str) -> None:
    """Record one call of a spied special method."""
    CALLS[name] += 1


class SpyMeta(type):
    """A metaclass that sees every attribute read on its classes."""

    def __getattribute__(cls, name: str) -> Any:
        count(f"meta.__getattribute__({name})")
        return super().__getattribute__(name)

    def __repr__(cls) -> str:
        count("meta.__repr__")
        return "SpyClass"

    def __instancecheck__(cls, instance: object) -> bool:
        count("meta.__instancecheck__")
        return False


class Spy(metaclass=SpyMeta):
    """Every special method a tracer might be tempted to call, counted."""

    def __init__(self, label: str = "spy") -> None:
        object.__setattr__(self, "label", label)

    def __repr__(self) -> str:
        count("__repr__")
        return f"Spy({object.__getattribute__(self, 'label')})"

    def __str__(self) -> str:
        count("__str__")
        return "spy"

    def __format__(self, spec: str) -> str:
        count("__format__")
        return "spy"

    def __eq__(self, other: object) -> bool:
        count("__eq__")
        return self is other

    def __hash__(self) -> int:
        count("__hash__")
        return 1

    def __len__(self) -> int:
        count("__len__")
        return 3

    def __iter__(self) -> Any:
        count("__iter__")
        return iter((1, 2, 3))

    def __bool__(self) -> bool:
        count("__bool__")
        return True

    def __getattr__(self, name: str) -> Any:
        count(f"__getattr__({name})")
        raise AttributeError(name)

    def __getattribute__(self, name: str) -> Any:
        count(f"__getattribute__({name})")
        return object.__getattribute__(self, name)

    def __dir__(self) -> list[str]:
        count("__dir__")
        return []

    def __sizeof__(self) -> int:
        count("__sizeof__")
        return 1

    def __reduce__(self) -> Any:
        count("__reduce__")
        return (Spy, ())

    @property
    def total(self) -> int:
        count("property")
        return 1

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        count("__class__")
        return int


class SpyList(list[int]):
    """A list subclass: must not be iterated or measured through its overrides."""

    def __iter__(self) -> Any:
        count("SpyList.__iter__")
        return super().__iter__()

    def __len__(self) -> int:
        count("SpyList.__len__")
        return super().__len__()

    def __repr__(self) -> str:
        count("SpyList.__repr__")
        return "SpyList"


class SpyDict(dict[str, int]):
    """A dict subclass with spied overrides."""

    def items(self) -> Any:
        count("SpyDict.items")
        return super().items()

    def __repr__(self) -> str:
        count("SpyDict.__repr__")
        return "SpyDict"


class SpyError(Exception, metaclass=type("ErrMeta", (SpyMeta, type(Exception)), {})):
    """An exception whose message, attributes and class are all user code."""

    def __str__(self) -> str:
        count("SpyError.__str__")
        return "secret message"

    def __repr__(self) -> str:
        count("SpyError.__repr__")
        return "SpyError()"

    def __getattribute__(self, name: str) -> Any:
        count(f"SpyError.__getattribute__({name})")
        return super().__getattribute__(name)


class ArgsError(Exception):
    """An exception whose ``args`` is a property (user code)."""

    @property  # type: ignore[override]
    def args(self) -> Any:
        count("ArgsError.args")
        return ("x",)


# --- traced functions (this file is user code) ---------------------------------------------------

def take(value: Any, *rest: Any, **named: Any) -> Any:
    """Receives spies as positional, variadic and keyword arguments and returns one."""
    return value


def give_back(value: Any) -> Any:
    """Returns the spy it got."""
    return value


def throw(error: BaseException) -> None:
    """Raises the given exception out of a traced call."""
    raise error


def catch(error: BaseException) -> str:
    """Raises and catches inside a traced call (the caught exception is recorded too)."""
    try:
        throw(error)
    except BaseException:
        return "handled"
    return "not reached"


def workload(values: dict[str, Any]) -> list[Any]:
    """Pass every value through arguments, results and exceptions."""
    out = []
    for value in values.values():
        out.append(take(value, value, (value,), [value], {"k": value}, key=value))
        out.append(give_back(value))
    catch(SpyError("boom"))
    catch(ArgsError())
    return out


def spies() -> dict[str, Any]:
    """Fresh spies of every kind; creating them runs user code, so counting starts after."""
    return {"spy": Spy(), "spy_class": Spy, "spy_list": SpyList([1, 2]),
            "spy_dict": SpyDict(a=1), "nested": [Spy(), {"x": Spy()}, (Spy(),)]}


def traced(function: Any, *args: Any, **options: Any) -> tuple[Any, list[CallEvent]]:
    """Run ``function`` in a session; return its result and the events."""
    with TraceSession(**options) as session:
        result = function(*args)
    return result, session.events


def test_default_capture_calls_no_user_code() -> None:
    """Arguments, results and exceptions built of spies are captured with zero spied calls."""
    values = spies()
    CALLS.clear()
    _, events = traced(workload, values)
    assert dict(CALLS) == {}
    names = {event.func_name for event in events}
    assert {"workload", "take", "give_back", "throw", "catch"} <= names
    take_event = next(e for e in events if e.func_name == "take")
    assert take_event.args[0] == ("value", "<Spy>", "p")
    raised = [e for e in events if e.func_name == "throw"]
    assert [e.exc_type for e in raised] == ["SpyError", "ArgsError"]
    assert "secret message" not in repr(events)


def test_exception_propagating_to_the_caller_calls_no_user_code() -> None:
    """An exception with a user ``__str__`` that leaves the traced block is not touched either."""
    error = SpyError("out")
    CALLS.clear()
    caught = None
    with TraceSession() as session:
        try:
            throw(error)
        except SpyError as exc:  # matching by class runs no user code
            caught = exc
    assert dict(CALLS) == {}
    assert caught is error
    (event,) = session.events
    assert event.exc_type == "SpyError" and "secret" not in (event.exc_msg or "")


def test_full_repr_is_an_opt_in_that_calls_repr() -> None:
    """With ``full_repr=True`` the user's ``__repr__`` is called: the documented trade-off."""
    spy = Spy("x")
    CALLS.clear()
    _, events = traced(give_back, spy, full_repr=True)
    assert CALLS["__repr__"] >= 1
    assert events[0].args[0][1] == "Spy(x)"


class BrokenRepr:
    """A ``__repr__`` that raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class HugeRepr:
    """A ``__repr__`` that returns a very long text."""

    def __repr__(self) -> str:
        return "h" * 10_000_000


def test_full_repr_survives_a_repr_that_raises() -> None:
    """A raising ``__repr__`` under full_repr gives a placeholder; the program is unaffected."""
    result, events = traced(give_back, BrokenRepr(), full_repr=True)
    assert isinstance(result, BrokenRepr)
    assert events[0].args[0][1] == "<BrokenRepr>"
    assert events[0].result_repr == "<BrokenRepr>"


def test_full_repr_output_is_still_bounded() -> None:
    """A 10 MB ``__repr__`` is cut to ``max_repr`` characters."""
    _, events = traced(give_back, HugeRepr(), full_repr=True, max_repr=50)
    assert len(events[0].args[0][1]) <= 50


def deep_list(depth: int) -> list[Any]:
    """``[[[...]]]`` nested ``depth`` times."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def self_referencing() -> list[Any]:
    """A list containing itself and a dict containing itself."""
    box: list[Any] = [1]
    box.append(box)
    table: dict[str, Any] = {"a": 1}
    table["me"] = table
    box.append(table)
    return box


BIG = {
    "list_1e6": lambda: list(range(10**6)),
    "tuple_1e6": lambda: tuple(range(10**6)),
    "set_1e6": lambda: set(range(10**6)),
    "dict_1e6": lambda: dict.fromkeys(range(10**6)),
    "int_1e5_digits": lambda: 10**100_000,
    "str_10MB": lambda: "s" * 10_000_000,
    "bytes_10MB": lambda: b"b" * 10_000_000,
    "deep_1e4": lambda: deep_list(10**4),
    "self_ref": self_referencing,
    "wide_nested": lambda: [[list(range(1000))] * 1000] * 1000,
}


@pytest.mark.parametrize("name", sorted(BIG))
def test_huge_deep_and_cyclic_values_are_bounded(name: str) -> None:
    """Capturing a huge, deep or cyclic value renders at most ``max_repr`` chars of it.

    Bounded work is checked by memory, not by the clock: rendering a million items (or
    copying 10 MB) would allocate megabytes; the capture may allocate a few kilobytes.
    """
    value = BIG[name]()
    capture = Capturer(max_repr=80, max_items=8)
    text, peak = _peak_allocation(capture, value)
    assert len(text) <= 80, text
    assert peak < 256 * 1024, f"{name}: capture allocated {peak} bytes at its peak"
    traced(give_back, 0)  # the first call of a function is learned once: not the value's cost
    (result, events), peak = _peak_allocation(traced, give_back, value)
    assert result is value
    assert len(events[0].args[0][1]) <= 80 and len(events[0].result_repr or "") <= 80
    assert peak < 1024 * 1024, f"{name}: the traced call allocated {peak} bytes at its peak"


def _peak_allocation(fn: Any, *args: Any) -> tuple[Any, int]:
    """``fn(*args)`` and the peak of memory it allocated meanwhile (tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = fn(*args)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


def test_self_reference_is_marked() -> None:
    """A container that contains itself shows ``...`` at the cycle."""
    text = Capturer(max_repr=200)(self_referencing())
    assert "..." in text and text.startswith("[1, ")


def test_huge_exception_message_is_bounded() -> None:
    """An exception carrying a 10 MB message is recorded cut, without copying it."""
    error = ValueError("m" * 10_000_000)
    traced(catch, ValueError("m"))  # the first call of a function is learned once
    (_, events), peak = _peak_allocation(traced, catch, error)
    thrown = next(e for e in events if e.func_name == "throw")
    assert thrown.exc_type == "ValueError"
    assert len(thrown.exc_msg or "") <= 4 * 80
    assert peak < 1024 * 1024, f"recording the exception allocated {peak} bytes at its peak"


def test_huge_int_exception_argument_does_not_raise() -> None:
    """An int too long for ``str()`` in an exception message is recorded without an error."""
    limit = sys.get_int_max_str_digits()
    assert limit > 0
    _, events = traced(catch, ValueError(10**100_000))
    thrown = next(e for e in events if e.func_name == "throw")
    assert thrown.exc_type == "ValueError" and thrown.exc_msg is not None
