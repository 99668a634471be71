"""Tracer options: one frozen dataclass, built from keyword arguments and ``FLOWTRACE_OTEL_*``."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import Any

#: Argument names that look secret; their values are replaced by :data:`REDACTED`.
DEFAULT_REDACT = (
    "password", "passwd", "secret", "token", "api_key", "apikey", "authorization",
    "auth", "cookie", "session", "credential", "private_key",
)
REDACTED = "[REDACTED]"


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything a user can set; the defaults are the documented ones."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    capture_args: bool = True
    capture_result: bool = True
    max_repr: int = 80
    max_items: int = 8
    full_repr: bool = False
    redact: tuple[str, ...] = DEFAULT_REDACT
    # formatter switches, FlowTrace's names
    show_args: bool = True
    show_result: bool = True
    show_timing: bool = True
    show_exc: bool = True
    # size control (used by the OTel bridge)
    max_spans_per_trace: int = 2000
    fold_after: int = 5
    min_duration_us: int = 0

    def replace(self, **changes: Any) -> Options:
        """Return a copy with ``changes`` applied, rejecting unknown names."""
        check_names(changes)
        return dataclasses.replace(self, **_coerce_all(changes))


_FIELDS = {f.name: f for f in dataclasses.fields(Options)}


def check_names(changes: Mapping[str, object]) -> None:
    """Raise ``TypeError`` naming every option that does not exist."""
    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise TypeError(
            f"unknown flowtrace_otel option(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_FIELDS))}"
        )


def _coerce_all(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Turn list-valued patterns into tuples so options stay hashable."""
    out = dict(changes)
    for name in ("include", "exclude", "redact"):
        if name in out:
            value = out[name]
            out[name] = (value,) if isinstance(value, str) else tuple(value)
    return out


# --- environment -----------------------------------------------------------------------------

#: env var -> option name; every variable is documented in the README's settings table.
ENV_VARS = {
    "FLOWTRACE_OTEL_INCLUDE": "include",
    "FLOWTRACE_OTEL_EXCLUDE": "exclude",
    "FLOWTRACE_OTEL_CAPTURE_ARGS": "capture_args",
    "FLOWTRACE_OTEL_CAPTURE_RESULT": "capture_result",
    "FLOWTRACE_OTEL_MAX_REPR": "max_repr",
    "FLOWTRACE_OTEL_MAX_ITEMS": "max_items",
    "FLOWTRACE_OTEL_FULL_REPR": "full_repr",
    "FLOWTRACE_OTEL_REDACT": "redact",
    "FLOWTRACE_OTEL_MAX_SPANS": "max_spans_per_trace",
    "FLOWTRACE_OTEL_FOLD_AFTER": "fold_after",
    "FLOWTRACE_OTEL_MIN_DURATION_US": "min_duration_us",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Emit ``message`` as a ``RuntimeWarning`` the first time ``key`` is seen."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def parse_bool(name: str, raw: str, default: bool) -> bool:
    """Parse a boolean env value; warn once and return ``default`` if it is not one."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    warn_once(name, f"{name}={raw!r} is not a boolean (1/0, true/false); using {default}")
    return default


def parse_int(name: str, raw: str, default: int, minimum: int = 0) -> int:
    """Parse a non-negative integer env value; warn once and fall back on bad input."""
    try:
        value = int(raw.strip())
    except ValueError:
        value = minimum - 1
    if value < minimum:
        warn_once(name, f"{name}={raw!r} is not an integer >= {minimum}; using {default}")
        return default
    return value


def _parse_list(raw: str) -> tuple[str, ...]:
    """Split a comma-separated env value into stripped, non-empty items."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def options_from_env(environ: Mapping[str, str] | None = None,
                     base: Options | None = None) -> Options:
    """Read ``FLOWTRACE_OTEL_*`` over ``base``; bad values warn once and keep the default."""
    env = os.environ if environ is None else environ
    opts = base or Options()
    changes: dict[str, Any] = {}
    for var, field_name in ENV_VARS.items():
        raw = env.get(var)
        if raw is None:
            continue
        default = getattr(opts, field_name)
        if isinstance(default, bool):
            changes[field_name] = parse_bool(var, raw, default)
        elif isinstance(default, int):
            changes[field_name] = parse_int(var, raw, default)
        else:
            changes[field_name] = _parse_list(raw)
    return opts.replace(**changes) if changes else opts
