"""The C capture (``_native.Capturer``) renders what the Python reference renders, byte for byte.

Hypothesis builds nested builtin values (every scalar type, huge ints, ranges whose repr fails,
surrogates, self-references) mixed with subclasses of builtins and objects whose dunders, and
whose metaclass's dunders, record every call; both capturers render them with random options;
the texts must be equal and no recorded dunder may have run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowtrace_otel.capture import Capturer
from flowtrace_otel.core import CORE_ENV, choose_core
from flowtrace_otel.redaction import DEFAULT_REDACT

if choose_core({}).native is None and os.environ.get(CORE_ENV) == "python":
    # as tests/test_native.py: a run without the C core must say so, or these tests fail
    pytest.skip(f"the C core is not built and {CORE_ENV}=python", allow_module_level=True)

RAN: list[str] = []  # every user dunder that ran, by name


def record(name: str) -> Callable[..., Any]:
    """A dunder that records that it ran, then behaves like object's (or returns a value)."""
    def dunder(*args: object, **kwargs: object) -> Any:
        RAN.append(name)
        if name in ("__hash__",):
            return 7
        if name in ("__eq__", "__ne__"):
            return False
        if name in ("__len__",):
            return 1
        if name in ("__iter__",):
            return iter(())
        if name in ("__bool__", "__contains__", "__instancecheck__", "__subclasscheck__"):
            return False
        return "user code"
    return dunder


EVIL = ("__repr__", "__str__", "__format__", "__eq__", "__ne__", "__hash__", "__len__",
        "__iter__", "__bool__", "__getitem__", "__add__", "__radd__", "__index__",
        "__sizeof__", "__contains__")


def evil_namespace(*extra: str) -> dict[str, Any]:
    """A class body whose dunders all record."""
    return {name: record(name) for name in (*EVIL, *extra)}


EvilMeta = type("EvilMeta", (type,), {
    **evil_namespace("__instancecheck__", "__subclasscheck__"),
    "__getattribute__": lambda cls, name: (RAN.append("meta __getattribute__"),
                                           type.__getattribute__(cls, name))[1],
})
Evil = type("Evil", (), {**evil_namespace("__getattr__"),
                         "__class__": property(record("__class__"))})
EvilWithMeta = EvilMeta("EvilWithMeta", (), evil_namespace())
EvilCallable = type("EvilCallable", (), evil_namespace("__call__", "__get__"))
EvilStr = type("EvilStr", (str,), evil_namespace())
EvilInt = type("EvilInt", (int,), evil_namespace())
EvilFloat = type("EvilFloat", (float,), evil_namespace())
EvilList = type("EvilList", (list,), evil_namespace())
EvilTuple = type("EvilTuple", (tuple,), evil_namespace())
EvilDict = type("EvilDict", (dict,), evil_namespace("keys", "items", "values"))
EvilBytes = type("EvilBytes", (bytes,), evil_namespace())
EvilError = type("EvilError", (ValueError,), evil_namespace())
EvilModule = type("EvilModule", (types.ModuleType,), {
    "__dict__": property(record("module __dict__")), "__repr__": record("__repr__")})
EvilName = type("EvilName", (str,), evil_namespace())
OddlyNamed = type("OddlyNamed", (), {})
OddlyNamed.__qualname__ = EvilName("Oddly.Named")  # a str subclass: allowed by type
Surrogate = type("Surrogate", (), {})
Surrogate.__qualname__ = "\ud800Surrogate"  # type() refuses it as a name, not as a qualname


def evil_function() -> None:
    """A function whose __qualname__ is a str subclass."""


evil_function.__qualname__ = EvilName("evil_function")


def make_evil(kind: str, seed: int) -> object:
    """One value of a user-defined or subclassed type."""
    makers: dict[str, Callable[[], object]] = {
        "object": Evil, "meta": EvilWithMeta, "str": lambda: EvilStr("s" * seed),
        "int": lambda: EvilInt(seed), "float": lambda: EvilFloat(seed / 3),
        "list": lambda: EvilList([seed]), "tuple": lambda: EvilTuple((seed,)),
        "dict": lambda: EvilDict(a=seed), "bytes": lambda: EvilBytes(b"b" * seed),
        "error": lambda: EvilError("boom"), "module": lambda: EvilModule(f"mod{seed}"),
        "oddly_named": OddlyNamed, "surrogate": Surrogate, "class": lambda: EvilWithMeta,
        "function": lambda: evil_function,
    }
    return makers[kind]()


evil_values = st.builds(make_evil, st.sampled_from([
    "object", "meta", "str", "int", "float", "list", "tuple", "dict", "bytes", "error",
    "module", "oddly_named", "surrogate", "class", "function"]), st.integers(0, 120))

safe_callables = st.sampled_from([
    len, print, dict.fromkeys, [].append, "".join, sys, types, make_evil, Capturer,
    Capturer.__call__, int, Evil().__sizeof__, record("x"), object.__new__, str.maketrans,
    (1).bit_length, {}.get, types.MethodType(len, 1), types.MethodType(Capturer.__call__, 1),
    types.MethodType(types.MethodType(len, 1), 2), EvilMeta,
    st.SearchStrategy.map, Evil, types.MethodType(EvilCallable(), 1), OddlyNamed])

text = (st.text(st.characters(exclude_categories=()), max_size=120)  # surrogates included
        | st.text(st.characters(codec="ascii"), max_size=120)
        | st.text(st.sampled_from("ab'\"\\\t\n\r\x00\x1f\x7f\x80é€\U0001f600\ud800"),
                  max_size=30))  # quotes and escapes
secret_words = st.sampled_from(["password", "api_key", "apiKey", "token", "Token", "name",
                                "db_password", "x-api-key", "session", "note"])

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**300, 2**300)
           | st.sampled_from([2**256 - 1, 2**256, -2**256, 2**257, 10**100, -(2**63), 2**63, 2**64])
           | st.integers(4300, 5000).map(lambda digits: 10**digits)  # past str()'s digit limit
           | st.floats() | st.complex_numbers() | text | secret_words | st.binary(max_size=120)
           | st.binary(max_size=20).map(bytearray) | st.just(...)
           | st.builds(range, st.integers(-5, 5), st.integers(-5, 50))
           | st.integers(4300, 4400).map(lambda digits: range(10**digits))  # its repr fails
           | st.just(range(0, 2**300, 7)))

keys = st.none() | st.booleans() | st.integers() | text | secret_words | st.floats(
    allow_nan=False) | st.binary(max_size=10) | st.frozensets(st.integers(), max_size=3)


def self_referencing(value: object, kind: int) -> object:
    """A container that holds itself (and ``value``)."""
    if kind == 0:
        items: list[object] = [value]
        items.append(items)
        return items
    table: dict[object, object] = {"value": value}
    table["me"] = table
    return (table, [table])


def containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Every builtin container of ``inner``, flat or nested, shared or self-referencing."""
    return (st.lists(inner, max_size=12) | st.tuples(inner) | st.tuples(inner, inner)
            | st.lists(inner, max_size=12).map(tuple)
            | st.dictionaries(keys, inner, max_size=12)
            | st.sets(keys, max_size=6) | st.frozensets(keys, max_size=6)
            | st.builds(self_referencing, inner, st.integers(0, 1))
            | inner.map(lambda v: [v, v]))


builtin_values = st.recursive(scalars, containers, max_leaves=40)
any_values = st.recursive(scalars | evil_values | safe_callables, containers, max_leaves=40)

options = st.fixed_dictionaries({
    "max_repr": st.integers(0, 200) | st.sampled_from([300, 1000, 100_000]),
    "max_items": st.integers(0, 12) | st.just(1000),
    "redact": st.sampled_from([(), ("password", "api_key"), DEFAULT_REDACT, ("token$",)]),
})


def both(opts: dict[str, Any]) -> tuple[Capturer, Capturer]:
    """The C capturer and the Python reference with the same options."""
    native, reference = Capturer(**opts, native=True), Capturer(**opts, native=False)
    assert native.native and not reference.native
    return native, reference


@settings(max_examples=400, deadline=None)
@example([1, "a", None], {"max_repr": 80, "max_items": 8, "redact": ()})
@example({"password": 1, "x": [{"api_key": 2}]}, {"max_repr": 80, "max_items": 8,
                                                  "redact": ("password", "api_key")})
@example(["x" * 10 + "'"], {"max_repr": 10, "max_items": 8, "redact": ()})
@example([[[["deep"]]]], {"max_repr": 80, "max_items": 8, "redact": ()})
@example("\ud800\udfff\x00'\"é", {"max_repr": 80, "max_items": 8, "redact": ()})
@example(["it's", 'say "hi"', "both ' and \"", "\t\\"], {"max_repr": 80, "max_items": 8,
                                                       "redact": ()})
@given(any_values, options)
def test_c_and_python_render_the_same_text_and_run_no_user_code(value: object,
                                                                 opts: dict[str, Any]) -> None:
    native, reference = both(opts)
    RAN.clear()
    expected = reference(value)
    assert RAN == [], f"the reference ran user code: {RAN}"
    assert native(value) == expected
    assert native(value) == expected  # the shared secret cache, now warm, changes nothing
    assert RAN == [], f"the C capture ran user code: {RAN}"


@settings(max_examples=100, deadline=None)
@given(builtin_values | safe_callables, options)
def test_full_repr_is_the_same_in_c(value: object, opts: dict[str, Any]) -> None:
    native, reference = both({**opts, "full_repr": True})
    assert native(value) == reference(value)


def test_each_user_code_hole_closed_in_the_reference_is_closed_in_c() -> None:
    """A metaclass __eq__/__hash__, a str-subclass __qualname__, a module's __dict__ property."""
    for capture in both({}):
        RAN.clear()
        assert capture(EvilWithMeta()) == "<EvilWithMeta>"  # kind in (...) compared with ==
        assert capture([EvilWithMeta(), 1]) == "[<EvilWithMeta>, 1]"  # a frozenset hashed it
        assert capture(OddlyNamed()) == "<Oddly.Named>"  # "<" + name ran name.__radd__
        assert capture(OddlyNamed) == "<class Oddly.Named>"  # f"{name}" ran __format__
        assert capture(evil_function) == "<function evil_function>"
        assert capture(EvilModule("m")) == "<module m>"  # a __dict__ property ran
        assert capture(types.ModuleType("\ud800")) == "<module \ud800>"
        assert RAN == []


def test_a_failing_repr_inside_fails_both_the_same_way() -> None:
    """range's repr raises past the int digit limit: only where the reference calls it."""
    huge = range(10**5000)
    for capture in both({"max_repr": 20}):
        assert capture([1, 2, huge]) == "<list>"  # flat: the builtin repr of the whole list
        assert capture(["x" * 100, huge]) == "['xxxxxxxxxxxxxxxxx…"  # cut before the range
        assert capture({"k": [huge]}) == "<dict>"


def test_the_c_capture_stops_rendering_exactly_where_the_reference_stops() -> None:
    """What a container renders past ``room`` is never shown, but a range's repr can fail:
    so a range just past each possible stopping point tells where each capturer stopped."""
    huge = range(10**5000)
    shapes = [lambda k: [[0] * k, huge], lambda k: [[[0] * k, huge]],
              lambda k: [("x" * k, [huge])], lambda k: {"k" * k: [huge]},
              lambda k: {"a": {"b" * k: [1, huge]}}, lambda k: [[0] * k, [huge], huge]]
    for max_repr in range(4, 48):
        native, reference = both({"max_repr": max_repr, "max_items": 8})
        for shape in shapes:
            for k in range(0, 16):
                value = shape(k)
                assert native(value) == reference(value), (max_repr, k)


def test_an_error_in_our_own_python_code_is_a_placeholder_and_an_interrupt_goes_on() -> None:
    from flowtrace_otel import _native
    from flowtrace_otel.capture import _failed, _other_text

    def broken(name: str, redact: object) -> bool:
        raise RuntimeError("a bug of ours")

    def interrupted(name: str, redact: object) -> bool:
        raise KeyboardInterrupt

    capture = _native.Capturer(80, 8, False, ("x",), {}, broken, _other_text, _failed)
    assert capture({"k": 1}) == "<dict>"
    capture = _native.Capturer(80, 8, False, ("x",), {}, interrupted, _other_text, _failed)
    with pytest.raises(KeyboardInterrupt):
        capture({"k": 1})


def test_a_signal_handlers_exception_raised_inside_the_c_capture_reaches_the_caller() -> None:
    """repr() runs pending signal handlers first, in C too: their exception must go on."""
    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError("too slow")

    capture = Capturer(native=True).call
    previous = signal.signal(signal.SIGALRM, on_alarm)
    lost = 0
    try:
        for attempt in range(30):
            try:
                signal.setitimer(signal.ITIMER_REAL, 0.0005 + 0.0001 * (attempt % 7))
                for _ in range(100_000):  # far more than the timer needs: lost if it ends
                    capture(1.5)
                lost += 1
            except TimeoutError:
                pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert lost == 0


def test_the_tracer_calls_the_c_object_itself() -> None:
    native, reference = both({})
    assert native.call is native._native and native.call(1) == "1"
    assert reference.call == reference.__call__


def test_the_c_capture_is_the_default_and_python_core_keeps_the_reference() -> None:
    code = "from flowtrace_otel.capture import Capturer as C; print(C().native)"
    seen = {}
    for core in ("", "python", "native"):
        env = {"PATH": "/usr/bin:/bin", CORE_ENV: core}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=True)
        seen[core] = done.stdout.strip()
    assert seen == {"": "True", "python": "False", "native": "True"}


def test_a_subclass_runs_the_reference() -> None:
    class Probe(Capturer):
        __slots__ = ()

    assert not Probe(native=True).native and Capturer(native=True).native


def test_limits_beyond_what_c_sums_fall_back_to_the_reference() -> None:
    assert not Capturer(max_repr=2**62).native
    with pytest.raises(ValueError):
        Capturer(max_repr=2**62, native=True)
