"""Which code is user code: decided once per code object, then cached by the monitor.

Left out by default: the standard library, site-packages/dist-packages, frozen and generated
code (file names in angle brackets), this package, module-level code (``<module>``), class
bodies (they run once, when the class is defined: not a call) and generator expressions (their
calls are shown under the function that defines them).
List, dict and set comprehensions have no frame of their own on 3.12+ (PEP 709, inlined), so
their calls also show under the function that contains them: comprehensions never appear as
calls. Lambdas and nested functions are ordinary calls (``f.<locals>.<lambda>``).
``include`` patterns, when given, replace the default choice; ``exclude`` patterns always win.
A pattern with a ``/`` or ending in ``.py`` is a path glob, anything else a module glob; a
module pattern also covers its submodules (``myapp`` covers ``myapp.models``).
"""

from __future__ import annotations

import fnmatch
import os
import site
import sys
import sysconfig
from types import CodeType

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SKIPPED_NAMES = frozenset({"<module>", "<genexpr>"})
_CO_OPTIMIZED = 0x0001  # set for functions; unset for module, class body and exec'd code


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
    """
    known = _module_names.get(filename)
    if known is not None:
        return known
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


class CodeFilter:
    """Answers "is this user code?" for a code object; pure, so callers may cache it."""

    def __init__(self, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> None:
        """Split the patterns into path globs and module globs."""
        self.include = include
        self.exclude = exclude
        self._roots = _library_roots()

    def key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What the decisions depend on: equal keys give equal decisions."""
        return (self.include, self.exclude)

    def is_user_code(self, code: CodeType) -> bool:
        """True when calls of ``code`` should be traced."""
        filename = code.co_filename
        if (code.co_name in _SKIPPED_NAMES or filename.startswith("<")
                or not code.co_flags & _CO_OPTIMIZED):
            return False
        path = os.path.realpath(filename) if os.path.isabs(filename) else os.path.abspath(filename)
        if path.startswith(_PACKAGE_DIR + os.sep) or _is_tracer_machinery(path):
            return False
        module = None
        if self.include:
            module = module_name_for(filename)
            if not _matches(self.include, path, module):
                return False
        elif path.startswith(self._roots) or _in_site_dir(path):
            return False
        if self.exclude:
            module = module or module_name_for(filename)
            if _matches(self.exclude, path, module):
                return False
        return True


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
