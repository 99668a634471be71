"""Every ``FLOWTRACE_OTEL*`` variable in one table, one parser per type, one way to complain.

Adding a variable is one :class:`Setting` line in :data:`SETTINGS`; ``docs/configuration.md``
shows the table (a test keeps the two equal). Rules for every variable:

* an unset or empty (blank) value means the default;
* a bad value never stops the program: one line on stderr names the variable, the value and
  the default used instead, once per process, whatever ``PYTHONWARNINGS`` says (the warning
  machinery is the program's: a tracer's setting must not turn into its exception);
* a ``FLOWTRACE_OTEL_*`` name that is not in the table is pointed out once, with the closest
  known name.

Standard library only: the core and the start-up hook import this.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from flowtrace_otel import redaction

PREFIX = "FLOWTRACE_OTEL"

#: the words a boolean accepts, after ``strip().lower()``; the ``.pth`` start-up hook repeats
#: FALSE_WORDS (it may import nothing), and a test checks that the two agree
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class Kind:
    """A type of setting: how a raw value is parsed, what a good one looks like."""

    label: str  # the type's name in the docs' table
    expected: str  # "a boolean (1/0, ...)": what a warning says a good value is
    parse: Callable[[str], Any]  # the value of a stripped, non-empty text; ValueError if bad
    show: Callable[[Any], str] = str  # how a value is written in docs and warnings


def _bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off``, any case."""
    value = text.lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ValueError(text)


def _count(minimum: int) -> Callable[[str], int]:
    """A parser of integers ``>= minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(text)
        return value

    return parse


def _items(text: str) -> tuple[str, ...]:
    """Comma-separated items, stripped, empty ones dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _redact(text: str) -> tuple[str, ...]:
    """Redaction rules: ``+word,...`` adds to the defaults, a plain list replaces them."""
    return redaction.resolve(_items(text))


def _choice(*choices: str) -> Callable[[str], str]:
    """A parser accepting one of ``choices``, in any case (as booleans are)."""

    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(text)
        return text.lower()

    return parse


def _show_list(value: tuple[str, ...]) -> str:
    """A list as it would be written in the variable."""
    return ",".join(value) if value else "(none)"


BOOL = Kind("boolean", "a boolean (1/0, true/false, yes/no, on/off)", _bool,
            lambda value: "1" if value else "0")
def at_least(minimum: int) -> Kind:
    """The type of integers ``>= minimum``."""
    return Kind(f"integer >= {minimum}", f"an integer >= {minimum}", _count(minimum))


COUNT = at_least(0)
PATTERNS = Kind("list", "comma-separated patterns", _items, _show_list)
REDACT_RULES = Kind("list", "comma-separated names (+name adds to the defaults)", _redact,
                    lambda value: "the default list" if value == redaction.DEFAULT_REDACT
                    else _show_list(value))
DEBUG = Kind("`raise`", "'raise'", _choice("raise"), lambda value: value or "(unset)")
CORE = Kind("`native` or `python`", "'native' or 'python'", _choice("native", "python"),
            lambda value: value or "native where built, else python")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: its name, type, default and one-line meaning."""

    name: str
    kind: Kind
    default: Any
    meaning: str
    option: str | None = None  # the Options field it sets, if any


#: Every variable the package reads. Add a line here to add one.
SETTINGS = (
    Setting("FLOWTRACE_OTEL", BOOL, False, "turn tracing and export on at interpreter start-up"),
    Setting("FLOWTRACE_OTEL_INCLUDE", PATTERNS, (), "trace only code matching these module or "
            "path globs (`myapp`, `myapp.*`, `src/*.py`), installed packages included", "include"),
    Setting("FLOWTRACE_OTEL_EXCLUDE", PATTERNS, (), "never trace code matching these", "exclude"),
    Setting("FLOWTRACE_OTEL_CAPTURE_ARGS", BOOL, True, "capture argument values", "capture_args"),
    Setting("FLOWTRACE_OTEL_CAPTURE_RESULT", BOOL, True, "capture return values",
            "capture_result"),
    Setting("FLOWTRACE_OTEL_MAX_REPR", COUNT, 80, "characters kept per captured value",
            "max_repr"),
    Setting("FLOWTRACE_OTEL_MAX_ITEMS", COUNT, 8, "items shown per list, tuple, set or dict",
            "max_items"),
    Setting("FLOWTRACE_OTEL_FULL_REPR", BOOL, False, "call `repr()` on objects of your classes "
            "(runs your code)", "full_repr"),
    Setting("FLOWTRACE_OTEL_REDACT", REDACT_RULES, redaction.DEFAULT_REDACT, "names whose "
            "values are `[REDACTED]` ([the rules](security.md)); `+name,...` adds to the defaults",
            "redact"),
    Setting("FLOWTRACE_OTEL_MAX_SPANS", COUNT, 2000, "span budget per trace",
            "max_spans_per_trace"),
    Setting("FLOWTRACE_OTEL_FOLD_AFTER", COUNT, 5, "repeated sibling calls kept before the rest "
            "are folded (`0`: never fold)", "fold_after"),
    Setting("FLOWTRACE_OTEL_MIN_DURATION_US", COUNT, 0, "leaf calls shorter than this are "
            "dropped (`0`: keep all)", "min_duration_us"),
    Setting("FLOWTRACE_OTEL_EXIT_TIMEOUT_MS", COUNT, 3000, "longest wait at exit for the last "
            "spans"),
    Setting("FLOWTRACE_OTEL_FAST_EXPORT", BOOL, True, "`0` uses the stock OTLP encoder "
            "(HTTP and gRPC) instead of the byte-identical fast one"),
    Setting("FLOWTRACE_OTEL_BUILD_ON_WORKER", BOOL, True, "`0` builds the private pipeline's "
            "spans on the program's thread at each call's end instead of on the export worker"),
    Setting("FLOWTRACE_OTEL_QUEUE_SPANS", at_least(1), 32768, "spans the private export queue "
            "holds before new traces are dropped whole (else `OTEL_BSP_MAX_QUEUE_SIZE`)"),
    Setting("FLOWTRACE_OTEL_CORE", CORE, None, "which core traces: `native` (C) or `python`"),
    Setting("FLOWTRACE_OTEL_DEBUG", DEBUG, None, "`raise` makes internal errors raise (for this "
            "project's tests)"),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}

# --- complaining -------------------------------------------------------------------------------

_warned: set[str] = set()


def _say(message: str) -> None:
    """Write one line to stderr; a closed or missing stderr loses it silently."""
    stream = sys.stderr or sys.__stderr__
    if stream is None:
        return
    if not message.startswith("flowtrace_otel:"):
        message = "flowtrace_otel: " + message
    try:
        stream.write(message.replace("\n", " ") + "\n")
        stream.flush()
    except (OSError, ValueError, AttributeError):
        pass


def warn_setting(key: str, message: str) -> None:
    """Write ``message`` as one line on stderr the first time ``key`` is seen."""
    if key in _warned:
        return
    _warned.add(key)
    _say(message)


def warn_once(key: str, message: str) -> None:
    """Emit ``message`` as a ``RuntimeWarning`` the first time ``key`` is seen.

    If the program's warning filters turn it into an error (``PYTHONWARNINGS=error``), it
    becomes one line on stderr instead: the tracer never raises into the program.
    """
    if key in _warned:
        return
    _warned.add(key)
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    except Warning:
        _say(message)


# --- reading -----------------------------------------------------------------------------------

def parse(setting: Setting, raw: str | None) -> Any:
    """The value of ``raw`` for ``setting``; a bad one warns once and gives the default."""
    if raw is None or not raw.strip():
        return setting.default
    return parse_as(setting.name, setting.kind, raw, setting.default)


def parse_as(name: str, kind: Kind, raw: str, default: Any) -> Any:
    """``raw`` parsed as ``kind``; a bad one warns once (naming ``name``) and gives ``default``."""
    text = raw.strip()
    if not text:
        return default
    try:
        return kind.parse(text)
    except ValueError:
        warn_setting(name, f"{name}={raw!r} is not {kind.expected}; "
                           f"using the default {kind.show(default)}")
        return default


def read(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The value of the variable ``name`` (a row of :data:`SETTINGS`) in ``environ``."""
    env = os.environ if environ is None else environ
    return parse(BY_NAME[name], env.get(name))


def unknown_names(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``(name, closest known name or None)`` for each ``FLOWTRACE_OTEL*`` name not in the table."""
    env = os.environ if environ is None else environ
    unknown = sorted(name for name in env if name.startswith(PREFIX) and name not in BY_NAME)
    if not unknown:
        return []
    import difflib  # noqa: PLC0415 - only for a misspelt name: start-up stays lean

    known = {name.removeprefix(PREFIX): name for name in BY_NAME}  # the shared prefix
    out = []                                                          # would make all look alike
    for name in unknown:
        close = [known[suffix] for suffix in difflib.get_close_matches(
            name.removeprefix(PREFIX), known, n=1, cutoff=0.6)]
        close = close or difflib.get_close_matches(name, BY_NAME, n=1, cutoff=0.9)
        out.append((name, close[0] if close else None))
    return out


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Warn (once each) about bad values and unknown ``FLOWTRACE_OTEL*`` names in ``environ``."""
    env = os.environ if environ is None else environ
    for setting in SETTINGS:
        parse(setting, env.get(setting.name))
    for name, close in unknown_names(env):
        hint = f"did you mean {close}?" if close else "see docs/configuration.md"
        warn_setting(name, f"{name} is not a flowtrace_otel setting and is ignored ({hint})")


def markdown_table() -> str:
    """The table of settings as Markdown (``docs/configuration.md`` holds a copy)."""
    lines = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for setting in SETTINGS:
        default = setting.kind.show(setting.default)
        lines.append(f"| `{setting.name}` | {setting.kind.label} | `{default}` | "
                     f"{setting.meaning} |")
    return "\n".join(lines) + "\n"
