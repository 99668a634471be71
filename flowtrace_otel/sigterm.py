"""Keep what finished when the program is killed by SIGTERM, then die by SIGTERM as before.

Used by ``FLOWTRACE_OTEL=1`` (flush the spans) and by ``flowtrace-otel run`` (print the tree,
or flush the spans). Only when SIGTERM has its default action: a program that installs its own
handler (before or after) wins and is left alone, and so does an ignored SIGTERM. The handler
runs the registered flushes (newest first), restores the default action and sends SIGTERM
again, so the parent sees "killed by SIGTERM" (exit status -15), as untraced.

A child made by ``fork`` (a ``multiprocessing`` pool worker) gets the default action back at
once: ``Pool.terminate()`` ends workers with SIGTERM, possibly while they wait on a lock the
parent holds, and they are expected to be gone at once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType

_flushes: list[Callable[[], None]] = []
_fork_hook = False


def flush_on_sigterm(flush: Callable[[], None]) -> bool:
    """Run ``flush`` if SIGTERM kills the process; False if SIGTERM is not ours to take.

    ``flush`` must not raise (what it raises is ignored) and must be bounded in time.
    """
    try:
        handler = signal.getsignal(signal.SIGTERM)
        if handler is not _on_sigterm:
            if handler is not signal.SIG_DFL:
                return False  # the program's own handler, or SIGTERM ignored
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: signals cannot be set here
        return False
    _flushes.append(flush)
    _at_fork()
    return True


def forget(flush: Callable[[], None]) -> None:
    """Do not run ``flush`` any more; the last one gone gives SIGTERM its default action back."""
    if flush in _flushes:
        _flushes.remove(flush)
    if _flushes:
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: the handler stays, and finds nothing to run
        pass


def _at_fork() -> None:
    """Register the fork-child reset once per process."""
    global _fork_hook
    if not _fork_hook:
        os.register_at_fork(after_in_child=_default_sigterm_in_fork_child)
        _fork_hook = True


def _default_sigterm_in_fork_child() -> None:
    """A forked child (a pool worker) dies by SIGTERM at once, as untraced.

    ``Pool.terminate()`` ends its workers with SIGTERM, possibly while they wait on a lock
    the parent holds: a handler that first flushes would delay each worker by up to the exit
    bound, or run Python code in a process that is expected to be gone.
    """
    _flushes.clear()
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # pragma: no cover - fork from a thread that is not the main one
        pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Run the flushes, restore the default action and re-deliver the signal."""
    flushes = list(reversed(_flushes))
    _flushes.clear()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for flush in flushes:
        try:
            flush()
        except Exception:  # dying by SIGTERM matters more than one flush
            pass
    os.kill(os.getpid(), signal.SIGTERM)
