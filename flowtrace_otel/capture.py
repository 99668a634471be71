"""Safe, bounded text for captured values: never runs user code unless ``full_repr`` asks.

Values of the builtin scalar and container types are shown by value, cut to ``max_repr``
characters and ``max_items`` items, with self-references shown as ``...``. Anything else is a
placeholder such as ``<Order>``: a user-defined ``__repr__``, ``__len__`` or ``__iter__`` is
user code and may have side effects, so it is not called. Dict entries whose string key looks
secret (by the ``redact`` rules, matched by word as for parameter names:
:mod:`flowtrace_otel.redaction`) show ``[REDACTED]``: that covers ``**kwargs``, headers and
settings dicts. ``capture`` never raises.
"""

from __future__ import annotations

import itertools
import types
from typing import Any

from flowtrace_otel.interrupts import program_exception
from flowtrace_otel.redaction import REDACTED, is_secret

_SCALARS = (type(None), bool, float, complex, range, types.EllipsisType)
_FLAT_SCALARS = frozenset(_SCALARS)
_PLAIN_NAMES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)
_MAX_DEPTH = 3
_INT_BITS = 256
_SECRET_CACHE = 4096  # distinct dict keys remembered as secret or not


def _cut(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def type_name(value: object) -> str:
    """The qualified name of ``value``'s type, read without a metaclass's ``__getattribute__``."""
    name: str = type.__getattribute__(type(value), "__qualname__")
    return name


def placeholder(value: object) -> str:
    """``<TypeName>`` for ``value``, read from its type without calling user code."""
    return "<" + type_name(value) + ">"


_EXC_ARGS = BaseException.__dict__["args"]  # the C getter: no property or __getattribute__ runs


class Capturer:
    """Turns values into bounded strings; one instance per options set."""

    __slots__ = ("_secret_keys", "full_repr", "max_items", "max_repr", "redact")

    def __init__(self, max_repr: int = 80, max_items: int = 8, full_repr: bool = False,
                 redact: tuple[str, ...] = ()) -> None:
        """Remember the limits and the secret-looking words for dict keys."""
        self.max_repr = max(max_repr, 4)
        self.max_items = max(max_items, 0)
        self.full_repr = full_repr
        self.redact = tuple(rule for rule in redact if rule)
        self._secret_keys: dict[str, bool] = {}

    def __call__(self, value: object) -> str:
        """Bounded text for ``value``; never raises."""
        try:
            return _cut(self._text(value, 0, set(), self.max_repr), self.max_repr)
        except Exception as error:  # a broken value must never break tracing
            mine = program_exception(error)
            if mine is not None:  # a signal handler's exception: the program's
                raise mine  # noqa: B904 - the same exception, going on
            return placeholder(value)

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
        if kind in _SCALARS:
            return repr(value)
        if kind is bytes or kind is bytearray:
            return repr(value[: self.max_repr])
        if kind is list or kind is tuple or kind is set or kind is frozenset or kind is dict:
            return self._container(value, kind, depth, seen, room)
        # issubclass(kind, ...) never reads ``value.__class__`` (which a user class may fake)
        if issubclass(kind, _PLAIN_NAMES):
            return self._named(value)
        if issubclass(kind, types.ModuleType):
            name = object.__getattribute__(value, "__dict__").get("__name__")
            return f"<module {name}>" if type(name) is str else placeholder(value)
        if issubclass(kind, BaseException) and not self.full_repr:
            return placeholder(value)
        if self.full_repr:
            return repr(value)
        return placeholder(value)

    def _named(self, value: Any) -> str:
        """``<function f>``-style text for functions, methods and classes."""
        kind = type(value)
        if issubclass(kind, type):
            return f"<class {type.__getattribute__(value, '__qualname__')}>"
        if kind is types.MethodType:  # its __qualname__ would be read off any callable
            value = value.__func__
            kind = type(value)
        if kind is types.FunctionType:
            name: str = value.__qualname__  # the function's own slot: no user code
            return f"<function {name}>"
        if kind is types.BuiltinFunctionType:
            owner = value.__self__  # its __qualname__ would ask owner's (meta)class
            if owner is None or type(owner) is types.ModuleType:
                return f"<function {value.__name__}>"
            if issubclass(type(owner), type):  # a class method of a builtin type: dict.fromkeys
                return f"<function {type.__getattribute__(owner, '__qualname__')}.{value.__name__}>"
            return f"<function {type_name(owner)}.{value.__name__}>"
        return placeholder(value)

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
            elif item_kind not in _FLAT_SCALARS:
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
        if not user_str and all(type(a) in (str, int, float, bool, type(None)) for a in args):
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
