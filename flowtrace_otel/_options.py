"""Tracer options: one frozen dataclass, built from keyword arguments and ``FLOWTRACE_OTEL_*``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from flowtrace_otel import _settings
from flowtrace_otel._settings import _warned, warn_once, warn_setting
from flowtrace_otel.redaction import DEFAULT_REDACT, REDACTED
from flowtrace_otel.redaction import resolve as resolve_redact

__all__ = [
    "DEFAULT_REDACT", "ENV_VARS", "REDACTED", "Options", "_warned", "check_names",
    "options_from_env", "parse_bool", "parse_int", "warn_once", "warn_setting",
]


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
    """Turn list-valued patterns into tuples so options stay hashable; resolve ``+name`` rules."""
    out = dict(changes)
    for name in ("include", "exclude", "redact"):
        if name in out:
            value = out[name]
            out[name] = (value,) if isinstance(value, str) else tuple(value)
    if "redact" in out:
        out["redact"] = resolve_redact(out["redact"])
    return out


# --- environment -----------------------------------------------------------------------------

#: env var -> option name, derived from the one table in :mod:`flowtrace_otel._settings`.
ENV_VARS = {s.name: s.option for s in _settings.SETTINGS if s.option is not None}


def parse_bool(name: str, raw: str, default: bool) -> bool:
    """Parse a boolean env value; warn once and return ``default`` if it is not one."""
    value: bool = _settings.parse_as(name, _settings.BOOL, raw, default)
    return value


def parse_int(name: str, raw: str, default: int, minimum: int = 0) -> int:
    """Parse an integer env value ``>= minimum``; warn once and fall back on bad input."""
    kind = _settings.COUNT if minimum == 0 else _settings.at_least(minimum)
    value: int = _settings.parse_as(name, kind, raw, default)
    return value


def options_from_env(environ: Mapping[str, str] | None = None,
                     base: Options | None = None) -> Options:
    """Read ``FLOWTRACE_OTEL_*`` over ``base``; bad values and unknown names warn once each."""
    env = os.environ if environ is None else environ
    opts = base or Options()
    changes: dict[str, Any] = {}
    for setting in _settings.SETTINGS:
        raw = env.get(setting.name)
        if setting.option is None or raw is None or not raw.strip():
            continue
        default = getattr(opts, setting.option)
        changes[setting.option] = _settings.parse_as(setting.name, setting.kind, raw, default)
    _settings.check_environment(env)  # the other variables, and names that are not settings
    return opts.replace(**changes) if changes else opts
