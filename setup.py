"""Build steps that pyproject.toml cannot declare: the optional C core and the start-up hook.

Everything else (name, version, dependencies, extras) lives in pyproject.toml.

* The C extension ``flowtrace_otel._native`` is optional: when the compiler is missing or the
  build fails, the install goes on with the pure-Python core and prints one line saying why
  (the same approach as coverage.py's setup.py).
* ``flowtrace_otel/startup/flowtrace_otel.pth`` must land at the site-packages root, in a wheel
  and in an editable install alike.  A ``build_py`` override only reaches wheels: setuptools'
  editable installs (PEP 660) map packages, not extra files in ``build_lib``.  So a ``build``
  sub-command writes it: into ``build_lib`` for a wheel, and, in editable mode, into the
  ``install_lib`` folder, which ``editable_wheel`` points at the root of the wheel it builds
  (where it also puts data, headers and scripts).  tests/test_packaging.py checks both.
"""

from __future__ import annotations

import os
import shutil
import sys

from setuptools import Command, Extension, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext

STARTUP_HOOK = os.path.join("flowtrace_otel", "startup", "flowtrace_otel.pth")
NATIVE_DIR = os.path.join("flowtrace_otel", "_native")


class build_startup_hook(Command):  # setuptools names commands in snake case
    """Put the one-line start-up hook at the root of the wheel (editable or not)."""

    description = "install flowtrace_otel.pth at the site-packages root"
    user_options: list[tuple[str, str | None, str]] = []  # noqa: RUF012

    def initialize_options(self) -> None:
        """Set by editable_wheel (the documented flag for build sub-commands)."""
        self.editable_mode = False
        self.target_dir: str | None = None

    def finalize_options(self) -> None:
        """A wheel gets the file in build_lib; an editable wheel in its own root."""
        if self.editable_mode:
            self.target_dir = self.get_finalized_command("install").install_lib
        else:
            self.target_dir = self.get_finalized_command("build").build_lib

    def run(self) -> None:
        """Copy the hook; its content is the one line in flowtrace_otel/startup."""
        assert self.target_dir is not None
        os.makedirs(self.target_dir, exist_ok=True)
        shutil.copyfile(STARTUP_HOOK, os.path.join(self.target_dir, "flowtrace_otel.pth"))

    def get_outputs(self) -> list[str]:
        """The file this command writes."""
        return [os.path.join(self.target_dir or "", "flowtrace_otel.pth")]

    def get_source_files(self) -> list[str]:
        """For the sdist."""
        return [STARTUP_HOOK]


class optional_build_ext(build_ext):
    """Build the C core if we can; otherwise say so in one line and install pure Python."""

    def run(self) -> None:
        """Never fail the install for the optional extension."""
        self.skipped = False
        try:
            super().run()
        except Exception as exc:  # any build failure means "no C core"
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        """Compile one extension, or skip it with a note."""
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    def copy_extensions_to_source(self) -> None:
        """Editable installs copy the built module next to the sources: not if it was skipped."""
        if not self.skipped:
            super().copy_extensions_to_source()

    def _skip(self, exc: BaseException) -> None:
        """The one-line note (pip shows it with -v; `flowtrace-otel --version` says it too)."""
        if self.skipped:
            return
        self.skipped = True
        text = str(exc).strip()
        reason = text.splitlines()[-1][-160:] if text else type(exc).__name__
        print(f"flowtrace_otel: C core not built ({reason}); installing the pure-Python core",
              file=sys.stderr)


build.sub_commands.append(("build_startup_hook", None))

NATIVE_SOURCES = sorted(
    os.path.join(NATIVE_DIR, name) for name in os.listdir(NATIVE_DIR) if name.endswith(".c")
)

setup(
    ext_modules=[
        Extension(
            "flowtrace_otel._native",
            sources=NATIVE_SOURCES,
            depends=sorted(
                os.path.join(NATIVE_DIR, n) for n in os.listdir(NATIVE_DIR) if n.endswith(".h")
            ),
            extra_compile_args=os.environ.get("FLOWTRACE_OTEL_CFLAGS", "").split(),
            extra_link_args=os.environ.get("FLOWTRACE_OTEL_LDFLAGS", "").split(),
        )
    ],
    cmdclass={"build_startup_hook": build_startup_hook, "build_ext": optional_build_ext},
)
