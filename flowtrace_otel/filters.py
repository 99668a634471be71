"""Which code is user code: decided once per code object, then cached by the monitor.

Left out by default: the standard library, site-packages/dist-packages, frozen and generated
code, this package, module-level code (``<module>``), class bodies (they run once, when the
class is defined: not a call) and generator expressions (their calls are shown under the
function that defines them).
List, dict and set comprehensions have no frame of their own on 3.12+ (PEP 709, inlined), so
their calls also show under the function that contains them: comprehensions never appear as
calls. Lambdas and nested functions are ordinary calls (``f.<locals>.<lambda>``).

Code typed or run as a string is user code: ``python -c`` and ``exec``/``compile`` of a string
(``<string>``), the REPL (``<stdin>``; on 3.13 ``<python-input-N>`` and ``<stdin>-N``),
``code.interact`` (``<console>``), IPython (``<ipython-input-N-...>``; Jupyter's cell files
are ordinary paths).
Such code has no file to judge by, so the namespace it runs in decides: ``__main__``, or a
module whose file is user code. Code the standard library generates (dataclasses' methods,
namedtuple's ``__new__``, gettext's plural forms, ...) runs in a namespace of its own or the
library's, and code ``exec``'d into a bare dict (no ``__name__``) is treated as generated too.

The program named on ``flowtrace-otel run``'s command line is user code with its package
(:func:`program_code`), even where it is installed in site-packages.
``include`` patterns, when given, replace the default choice; ``exclude`` patterns always win.
A pattern with a ``/`` or ending in ``.py`` is a path glob, anything else a module glob; a
module pattern also covers its submodules (``myapp`` covers ``myapp.models``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import re
import site
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from types import CodeType

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SKIPPED_NAMES = frozenset({"<module>", "<genexpr>"})
_CO_OPTIMIZED = 0x0001  # set for functions; unset for module, class body and exec'd code
#: file names of code typed at a prompt or run from a string (3.13's basic REPL: ``<stdin>-N``)
_TYPED_FILES = re.compile(r"<(?:string|stdin|console|input|python-input-\d+"
                          r"|ipython-input-\d+-[0-9a-f]+|pyshell#\d+)>(?:-\d+)?")

# --- why a code object is left out (counted, to explain an empty trace) -----------------------
STDLIB = "stdlib"
SITE_PACKAGES = "site-packages"
OURS = "flowtrace_otel"
GENERATED = "generated"
MODULE_LEVEL = "module-level"
NOT_INCLUDED = "not-included"
EXCLUDED = "excluded"


@functools.cache  # fixed for the process; ~5 ms to compute (a session per test pays it once)
def _library_roots() -> tuple[str, ...]:
    """Folders whose code is not user code: stdlib, site-packages, the interpreter prefix."""
    roots: set[str] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.realpath(path))
    for path in [*site.getsitepackages(), site.getusersitepackages()]:
        roots.add(os.path.realpath(path))
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        roots.add(os.path.realpath(os.path.join(prefix, "lib")))
    roots.add(_PACKAGE_DIR)
    return tuple(sorted(root + os.sep for root in roots))


_module_names: dict[str, str] = {}


def module_name_for(filename: str) -> str:
    """Best-effort module name for a source file (``__main__`` for the running script).

    Read from the modules' own ``__dict__`` (a lazy module or a proxy object in
    ``sys.modules`` runs no code), and remembered per file: all functions of a file share it.
    Code typed at a prompt or run from a string is named ``__main__``.
    """
    known = _module_names.get(filename)
    if known is not None:
        return known
    if filename.startswith("<"):
        return "__main__"
    name = _loaded_module_named(filename) or _name_from_path(filename)
    _module_names[filename] = name
    return name


def _loaded_module_named(filename: str) -> str | None:
    """The name under which ``filename`` was imported, or None."""
    for name, module in list(sys.modules.items()):
        try:
            namespace = object.__getattribute__(module, "__dict__")
            if namespace.get("__file__") == filename:
                return name
        except Exception:  # not a module-like object: skip it
            continue
    return None


def _module_file(name: str) -> str | None:
    """The ``__file__`` of the loaded module ``name``, read without running its code."""
    module = sys.modules.get(name)
    if module is None:
        return None
    try:
        file = object.__getattribute__(module, "__dict__").get("__file__")
    except Exception:  # not a module-like object
        return None
    return file if isinstance(file, str) else None


def _name_from_path(filename: str) -> str:
    """A dotted name for ``filename`` relative to the longest ``sys.path`` entry holding it."""
    real = os.path.realpath(filename)
    best = ""
    for entry in sys.path:
        if not isinstance(entry, str):
            continue  # importlib ignores non-str entries too
        base = os.path.realpath(entry or os.getcwd()) + os.sep
        if real.startswith(base) and len(base) > len(best):
            best = base
    rel = real[len(best):] if best else os.path.basename(real)
    rel = rel[:-3] if rel.endswith(".py") else rel
    parts = [p for p in rel.split(os.sep) if p]
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "__main__"


_program_paths: tuple[str, ...] = ()


@contextlib.contextmanager
def program_code(paths: tuple[str, ...]) -> Iterator[None]:
    """Count ``paths`` (package folders or module files) as user code for filters made inside.

    This is how ``flowtrace-otel run`` makes the program it runs, and its package, user code
    even when they are installed in site-packages or the standard library.
    """
    global _program_paths
    saved = _program_paths
    _program_paths = tuple(os.path.realpath(p) for p in paths)
    try:
        yield
    finally:
        _program_paths = saved


class CodeFilter:
    """Answers "is this user code?" for a code object; pure, so callers may cache it.

    It counts why code was left out (:attr:`left_out`), which is what
    :func:`why_nothing_recorded` explains an empty trace with.
    """

    def __init__(self, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
        """Split the patterns into path globs and module globs."""
        self.include = include
        self.exclude = exclude
        self.program = _program_paths
        self._roots = _library_roots()
        #: how many code objects were left out, by (reason, top-level package of library code)
        self.left_out: Counter[tuple[str, str]] = Counter()
        #: how many code objects were found to be user code
        self.chosen = 0

    def key(self) -> tuple[tuple[str, ...], ...]:
        """What the decisions depend on: equal keys give equal decisions."""
        return (self.include, self.exclude, self.program)

    def is_user_code(self, code: CodeType) -> bool:
        """True when calls of ``code`` should be traced."""
        reason = self._reason(code)
        if reason is None:
            self.chosen += 1
            return True
        if reason[0] != GENERATED:  # counted by typed_code_module, asked next
            self.left_out[reason] += 1
        return False

    def typed_code_module(self, code: CodeType,
                          namespace_of: Callable[[CodeType], Mapping[str, object] | None],
                          ) -> str | None:
        """The module name of ``code`` typed at a prompt or run from a string, if it is user code.

        ``namespace_of(code)`` gives the globals ``code`` runs with (None when unknown), asked
        only for typed-looking code: the file name of such code says nothing, the namespace
        says whose it is. None means "not user code".
        """
        name = self._typed_code_name(code, namespace_of)
        if name is None:
            frozen = code.co_filename.startswith("<frozen ")  # "<frozen importlib._bootstrap>"
            top = code.co_filename[8:-1].split(".")[0] if frozen else ""
            self.left_out[STDLIB if frozen else GENERATED, top] += 1
            return None
        if self.include and not _matches(self.include, code.co_filename, name):
            self.left_out[NOT_INCLUDED, ""] += 1
            return None
        if self.exclude and _matches(self.exclude, code.co_filename, name):
            self.left_out[EXCLUDED, ""] += 1
            return None
        self.chosen += 1
        return name

    def _typed_code_name(self, code: CodeType,
                         namespace_of: Callable[[CodeType], Mapping[str, object] | None],
                         ) -> str | None:
        """The namespace's module name when ``code`` is typed or exec'd user code, else None."""
        if (code.co_name in _SKIPPED_NAMES or not code.co_flags & _CO_OPTIMIZED
                or not _TYPED_FILES.fullmatch(code.co_filename)
                or code.co_qualname.partition(".")[0] == "__create_fn__"):
            return None  # __create_fn__: the dataclasses module's generated methods
        namespace = namespace_of(code)
        if namespace is None:
            return None
        name = namespace.get("__name__")
        if not isinstance(name, str):
            return None  # a bare namespace: how libraries generate code
        if name in ("__main__", "__console__"):  # __console__: code.interact()'s namespace
            return name
        file = _module_file(name)  # namedtuple's "namedtuple_T" names no module: None
        if file is None or file.startswith("<"):
            return None
        path = os.path.realpath(file)
        if self._library_reason(path) is not None:
            return None
        return name

    def _reason(self, code: CodeType) -> tuple[str, str] | None:
        """Why ``code`` is not user code (reason, library package), or None when it is."""
        filename = code.co_filename
        if code.co_name in _SKIPPED_NAMES or not code.co_flags & _CO_OPTIMIZED:
            return MODULE_LEVEL, ""
        if filename.startswith("<"):
            return GENERATED, ""
        path = os.path.realpath(filename) if os.path.isabs(filename) else os.path.abspath(filename)
        if path.startswith(_PACKAGE_DIR + os.sep) or _is_tracer_machinery(path):
            return OURS, ""
        module = None
        if self.include:
            module = module_name_for(filename)
            if not _matches(self.include, path, module):
                return NOT_INCLUDED, ""
        else:
            reason = self._library_reason(path)
            if reason is not None:
                return reason, _top_level_name(path, self._roots)
        if self.exclude:
            module = module or module_name_for(filename)
            if _matches(self.exclude, path, module):
                return EXCLUDED, ""
        return None

    def _library_reason(self, path: str) -> str | None:
        """STDLIB or SITE_PACKAGES for library files not named on the command line, else None."""
        if self.program and (path in self.program
                             or path.startswith(tuple(p + os.sep for p in self.program))):
            return None
        if _in_site_dir(path):
            return SITE_PACKAGES
        if path.startswith(self._roots):
            return STDLIB
        return None


def _top_level_name(path: str, roots: tuple[str, ...]) -> str:
    """``yaml`` for ``.../site-packages/yaml/parser.py``, ``json`` for ``.../lib/json/x.py``."""
    for marker in (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}"):
        if marker in path:
            rest = path.rsplit(marker, 1)[1]
            break
    else:
        base = max((root for root in roots if path.startswith(root)), key=len, default="")
        rest = path[len(base):]
    first = rest.split(os.sep, 1)[0]
    name = first[:-3] if first.endswith(".py") else first
    return name if name.isidentifier() else ""


#: The export path of the tracer itself: never traced, whatever ``include`` says, so the
#: exporter thread cannot feed spans about exporting back into the exporter.
_MACHINERY = tuple(f"{os.sep}{name}{os.sep}" for name in (
    "opentelemetry", "grpc", "google" + os.sep + "protobuf", "urllib3", "requests"))


def _is_tracer_machinery(path: str) -> bool:
    """True for the OpenTelemetry SDK/exporters and the transports they export with."""
    return _in_site_dir(path) and any(part in path for part in _MACHINERY)


def _in_site_dir(path: str) -> bool:
    """True for files of installed packages, wherever the environment lives."""
    return f"{os.sep}site-packages{os.sep}" in path or f"{os.sep}dist-packages{os.sep}" in path


def _matches(patterns: tuple[str, ...], path: str, module: str) -> bool:
    """True when any pattern matches the file path or the module name."""
    for pattern in patterns:
        if "/" in pattern or pattern.endswith(".py"):
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, "*/" + pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatch(module, pattern) or module.startswith(pattern + "."):
            return True
    return False


Counts = dict[tuple[str, str], int]


def counts_of(code_filter: CodeFilter) -> Counts:
    """A snapshot of what ``code_filter`` has left out so far."""
    return dict(code_filter.left_out)


def why_nothing_recorded(code_filter: CodeFilter, since: Counts | None = None,
                         until: Counts | None = None, *, ignore: frozenset[str] = frozenset(),
                         cli: bool = False) -> str:
    """One line saying why a trace is empty and which option would change it.

    Only what was left out between the snapshots ``since`` (when the trace began) and
    ``until`` (default: now) counts, without the library packages in ``ignore`` (those the
    caller itself ran). ``cli`` spells options as ``--include``.
    """
    counts = Counter(until if until is not None else counts_of(code_filter))
    counts.subtract(since or {})
    left: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for (reason, package), count in counts.items():
        if count > 0 and package not in ignore:
            left[reason] += count
            if package:
                packages[package] += count

    def option(name: str, value: str) -> str:
        return f"--{name} '{value}'" if cli else f"{name}=('{value}',)"

    head = f"{'flowtrace-otel' if cli else 'flowtrace_otel'}: no calls recorded: "
    if code_filter.include and left[NOT_INCLUDED]:
        shown = ", ".join(repr(p) for p in code_filter.include)
        return (head + f"no function that ran matched include {shown}; a pattern is a module "
                "glob ('myapp', 'myapp.*') or a path glob ('src/*.py')")
    if left[EXCLUDED]:
        shown = ", ".join(repr(p) for p in code_filter.exclude)
        return head + f"every function of your code that ran matched exclude {shown}"
    if left[STDLIB] or left[SITE_PACKAGES]:
        where = " and ".join(w for w, n in (("site-packages", left[SITE_PACKAGES]),
                                            ("the standard library", left[STDLIB])) if n)
        if packages:
            top = packages.most_common(1)[0][0]
            hint = f"; use {option('include', top)} to trace that package"
        else:
            hint = f"; use {option('include', 'PACKAGE')} to trace a library"
        return head + f"every function that ran is in {where} (only your code is traced){hint}"
    if left[GENERATED]:
        return (head + "the functions that ran were generated code (exec'd into a namespace "
                "without __name__, dataclasses, namedtuple), which is not traced")
    return head + ("no function of your code ran while tracing (module-level code is not a "
                   "call: put the work in a function)")
