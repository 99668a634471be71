"""Safe, bounded text for captured values: never runs user code unless ``full_repr`` asks.

Values of the builtin scalar and container types are shown by value, cut to ``max_repr``
characters and ``max_items`` items, with self-references shown as ``...``. Anything else is a
placeholder such as ``<Order>``: a user-defined ``__repr__``, ``__len__`` or ``__iter__`` is
user code and may have side effects, so it is not called. Dict entries whose string key looks
secret (by the ``redact`` rules, matched by word as for parameter names:
:mod:`flowtrace_otel.redaction`) show ``[REDACTED]``: that covers ``**kwargs``, headers and
settings dicts. ``capture`` never raises.

This module is the reference. Where the C extension is built and the core allows it
(``FLOWTRACE_OTEL_CORE`` is not ``python``), a ``Capturer`` hands each value to its C twin,
``flowtrace_otel._native.Capturer`` (``_native/capture.c``), which renders the same text byte
for byte (tests/test_capture_native.py compares them) without the Python frames.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable
from typing import Any

from flowtrace_otel.core import PYTHON, CoreUnavailable, current_core
from flowtrace_otel.interrupts import program_exception
from flowtrace_otel.redaction import REDACTED, is_secret

_SCALARS = (type(None), bool, float, complex, range, types.EllipsisType)
# Types are looked up by id: ``kind in _SCALARS`` would compare with ``==`` and a set would
# hash, and a metaclass may define ``__eq__`` or ``__hash__`` (user code). Builtin types live
# as long as the interpreter, so their ids are stable.
_SCALAR_IDS = frozenset(map(id, _SCALARS))
_MESSAGE_ARG_IDS = frozenset(map(id, (str, int, float, bool, type(None))))
_PLAIN_NAMES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)
_MAX_DEPTH = 3
_INT_BITS = 256
_SECRET_CACHE = 4096  # distinct dict keys remembered as secret or not


def _cut(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _exact(name: str) -> str:
    """``name`` as an exact ``str``: a ``__qualname__`` may be a str subclass whose ``__add__``,
    ``__radd__`` or ``__format__`` is user code; ``str.__str__`` copies its characters."""
    text: str = str.__str__(name)
    return text


def type_name(value: object) -> str:
    """The qualified name of ``value``'s type, read without a metaclass's ``__getattribute__``."""
    return _exact(type.__getattribute__(type(value), "__qualname__"))


def placeholder(value: object) -> str:
    """``<TypeName>`` for ``value``, read from its type without calling user code."""
    return "<" + type_name(value) + ">"


_EXC_ARGS = BaseException.__dict__["args"]  # the C getter: no property or __getattribute__ runs


class Capturer:
    """Turns values into bounded strings; one instance per options set."""

    __slots__ = ("_native", "_secret_keys", "call", "full_repr", "max_items", "max_repr",
                 "redact")

    def __init__(self, max_repr: int = 80, max_items: int = 8, full_repr: bool = False,
                 redact: tuple[str, ...] = (), *, native: bool | None = None) -> None:
        """Remember the limits and the secret-looking words for dict keys.

        ``native``: True asks for the C twin (RuntimeError if it is not available), False for
        this reference; None (the default) takes the C twin when the process's core allows
        it. A subclass always runs the reference (it may override its methods).
        """
        self.max_repr = max(max_repr, 4)
        self.max_items = max(max_items, 0)
        self.full_repr = full_repr
        self.redact = tuple(rule for rule in redact if rule)
        self._secret_keys: dict[str, bool] = {}
        self._native: Callable[[object], str] | None = None
        if native is not False and type(self) is Capturer:
            self._native = self._native_twin(required=native is True)
        self.call: Callable[[object], str] = self._native or self.__call__
        """``self(value)`` without the Python frame when the C twin renders (the hot path's)."""

    def _native_twin(self, required: bool) -> Callable[[object], str] | None:
        """The C twin with these options, or None when the core or the options rule it out."""
        twin = _native_capturer_type() if not required else _native_capturer_type(force=True)
        if twin is None:
            if required:
                raise RuntimeError("the C capture (flowtrace_otel._native) is not available")
            return None
        try:
            made: Callable[[object], str] = twin(
                self.max_repr, self.max_items, self.full_repr, self.redact, self._secret_keys,
                is_secret, _other_text, _failed)
        except (OverflowError, ValueError):  # limits beyond what C sums safely: the reference
            if required:
                raise
            return None
        return made

    @property
    def native(self) -> bool:
        """True when values are rendered by the C twin."""
        return self._native is not None

    def __call__(self, value: object) -> str:
        """Bounded text for ``value``; never raises."""
        native = self._native
        if native is not None:  # the same text; it calls _failed where we would fail
            return native(value)
        try:
            return _cut(self._text(value, 0, set(), self.max_repr), self.max_repr)
        except Exception as error:  # a broken value must never break tracing
            return _failed(value, error)

    def _text(self, value: Any, depth: int, seen: set[int], room: int) -> str:
        """The text of ``value``, or a prefix of it longer than ``room`` characters.

        The caller cuts the whole text to ``max_repr`` characters anyway, so a container stops
        rendering items once its text outgrows ``room``: what is dropped would be cut off.
        """
        kind = type(value)
        if kind is str:
            return repr(value[: self.max_repr])
        if kind is int:
            if value.bit_length() > _INT_BITS:
                return f"<int {value.bit_length()} bits>"
            return repr(value)
        if id(kind) in _SCALAR_IDS:
            return repr(value)
        if kind is bytes or kind is bytearray:
            return repr(value[: self.max_repr])
        if kind is list or kind is tuple or kind is set or kind is frozenset or kind is dict:
            return self._container(value, kind, depth, seen, room)
        return _other_text(value, self.full_repr)

    def _secret(self, key: object) -> bool:
        """True when a dict key is a string that looks like the name of a secret."""
        if type(key) is not str or not self.redact:
            return False
        known = self._secret_keys.get(key)  # keys repeat (kwargs, settings): decide once
        if known is None:
            known = is_secret(key, self.redact)
            if len(self._secret_keys) < _SECRET_CACHE:
                self._secret_keys[key] = known
        return known

    def _flat(self, value: Any, kind: type) -> bool:
        """True when the builtin ``repr`` of ``value`` is exactly what ``_container`` would build.

        That is when every item (and dict key) is a scalar shown by its ``repr`` anyway: no
        container inside, no string or bytes longer than ``max_repr`` (those are cut one by
        one), no huge int, and no dict key that looks secret. The builtin ``repr`` of such
        items runs no user code.
        """
        limit = self.max_repr
        if kind is dict:
            if self.redact and any(map(self._secret, value)):
                return False
            items: Any = itertools.chain(value, value.values())
        else:
            items = value
        for item in items:
            item_kind = type(item)
            if item_kind is str or item_kind is bytes:
                if len(item) > limit:
                    return False
            elif item_kind is int:
                if item.bit_length() > _INT_BITS:
                    return False
            elif id(item_kind) not in _SCALAR_IDS:
                return False
        return True

    def _container(self, value: Any, kind: type, depth: int, seen: set[int], room: int) -> str:
        """Text of a builtin container, at most ``max_items`` items and ``_MAX_DEPTH`` deep.

        Stops early, returning an unclosed prefix, once the text is longer than ``room``.
        """
        if id(value) in seen:
            return "..."
        if depth >= _MAX_DEPTH:
            return f"<{kind.__name__} len={len(value)}>"
        if len(value) <= self.max_items and self._flat(value, kind):
            return repr(value)  # C speed; the same text as item by item (a test compares)
        if kind is set or kind is frozenset:
            if not value:
                return f"{kind.__name__}()"
            opening, closing = ("{", "}") if kind is set else ("frozenset({", "})")
        elif kind is list:
            opening, closing = "[", "]"
        elif kind is tuple:
            opening, closing = "(", ",)" if len(value) == 1 else ")"
        else:
            opening, closing = "{", "}"
        seen.add(id(value))
        parts: list[str] = []
        length = len(opening) - 2  # the text so far, less the first separator
        try:
            items = value.items() if kind is dict else value
            for count, item in enumerate(items):
                if length > room:  # longer than will be shown: the rest would be cut off
                    return opening + ", ".join(parts)
                if count >= self.max_items:
                    parts.append(f"...+{len(value) - count}")
                    break
                left = room - length - 2
                if kind is dict:
                    key, val = item
                    part = self._text(key, depth + 1, seen, left)
                    if len(part) <= left:
                        part += ": " + (REDACTED if self._secret(key) else
                                        self._text(val, depth + 1, seen, left - len(part) - 2))
                else:
                    part = self._text(item, depth + 1, seen, left)
                parts.append(part)
                length += len(part) + 2
        finally:
            seen.discard(id(value))
        body = opening + ", ".join(parts)
        return body if length > room else body + closing


def _other_text(value: Any, full_repr: bool) -> str:
    """The text of a value that is none of the builtin scalars and containers.

    Functions, methods and classes by name, modules by ``__name__``; with ``full_repr`` the
    value's own ``repr``; anything else a placeholder. The C twin calls this for the first
    three kinds and for ``full_repr``.
    """
    kind = type(value)
    # issubclass(kind, ...) never reads ``value.__class__`` (which a user class may fake)
    if issubclass(kind, _PLAIN_NAMES):
        return _named(value)
    if issubclass(kind, types.ModuleType):
        # the module's own __dict__ slot: a subclass's ``__dict__`` property is user code
        name = _MODULE_DICT.__get__(value, types.ModuleType).get("__name__")
        return f"<module {name}>" if type(name) is str else placeholder(value)
    if issubclass(kind, BaseException) and not full_repr:
        return placeholder(value)
    if full_repr:
        return repr(value)
    return placeholder(value)


_MODULE_DICT = vars(types.ModuleType)["__dict__"]  # a member descriptor: no user code


def _named(value: Any) -> str:
    """``<function f>``-style text for functions, methods and classes."""
    kind = type(value)
    if issubclass(kind, type):
        return f"<class {_exact(type.__getattribute__(value, '__qualname__'))}>"
    if kind is types.MethodType:  # its __qualname__ would be read off any callable
        value = value.__func__
        kind = type(value)
    if kind is types.FunctionType:
        name: str = value.__qualname__  # the function's own slot: no user code
        return f"<function {_exact(name)}>"
    if kind is types.BuiltinFunctionType:
        owner = value.__self__  # its __qualname__ would ask owner's (meta)class
        if owner is None or type(owner) is types.ModuleType:
            return f"<function {value.__name__}>"
        if issubclass(type(owner), type):  # a class method of a builtin type: dict.fromkeys
            owner_name = _exact(type.__getattribute__(owner, "__qualname__"))
            return f"<function {owner_name}.{value.__name__}>"
        return f"<function {type_name(owner)}.{value.__name__}>"
    return placeholder(value)


def _failed(value: object, error: Exception) -> str:
    """What capture shows when rendering ``value`` raised ``error``: its placeholder, unless
    ``error`` is the program's own (a signal handler's), which goes on into the program."""
    mine = program_exception(error)
    if mine is not None:
        raise mine
    return placeholder(value)


def _native_capturer_type(force: bool = False) -> Callable[..., Callable[[object], str]] | None:
    """The C twin's type when the extension is built and the core allows it (not ``python``)."""
    try:
        choice = current_core()
    except CoreUnavailable:  # FLOWTRACE_OTEL_CORE=native without the extension
        return None
    if choice.native is None or (choice.requested == PYTHON and not force):
        return None
    twin: Callable[..., Callable[[object], str]] | None = getattr(choice.native, "Capturer", None)
    return twin


def exception_message(exc: BaseException, capture: Capturer) -> str:
    """The message of ``exc`` without running a user-defined ``__str__`` (unless full_repr)."""
    try:
        # read through ``type``/the C descriptors: a metaclass ``__getattribute__`` or an
        # ``args`` property is user code too
        str_impl = type.__getattribute__(type(exc), "__str__")
        user_str = not isinstance(str_impl, types.WrapperDescriptorType)
        if user_str and not capture.full_repr:
            return "<message not captured: custom __str__>"
        args = _EXC_ARGS.__get__(exc, BaseException)
        if not user_str and all(id(type(a)) in _MESSAGE_ARG_IDS for a in args):
            return _cut(str(exc), 4 * capture.max_repr)
        if user_str:
            return _cut(str(exc), 4 * capture.max_repr)
        if len(args) == 1:
            return capture(args[0])
        return capture(args)
    except Exception as error:
        mine = program_exception(error)
        if mine is not None:
            raise mine  # noqa: B904 - the same exception, going on
        return "<message not captured>"
