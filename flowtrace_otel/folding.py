"""Folding: which repeated sibling calls are kept in detail, and the aggregate for the rest.

One rule, shared by everything that shows calls to a person (the in-memory session while it
records, :func:`~flowtrace_otel.formatters.format_tree`, the CLI, and the notebook magic and the
pytest plugin that reuse them):

* under one parent, the first ``keep`` calls of each function are kept in detail;
* a call that raised (an exception left it) is always kept, and does not use up the ``keep``
  of its function;
* every other call of that function under that parent is *folded*: it and all the calls made
  inside it are counted in one :class:`Fold` per (parent, function) (calls, calls inside,
  total / min / max duration, how many raised), shown as one line where the first folded call
  started.

Calls end before their parent, so both a recorder (streaming, at each call's end) and a
formatter (over a finished list) can apply the rule with a :class:`Siblings` per parent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

#: ``status`` of a :class:`~flowtrace_otel.events.CallEvent` that stands for folded calls
FOLDED = "folded"


@dataclasses.dataclass
class Fold:
    """Aggregate of folded calls of one function under one parent."""

    count: int = 0          # folded calls of the function
    inside: int = 0         # calls made inside them (folded along, at any depth)
    total_ns: int = 0       # sum of their durations (wall time, start to end)
    min_ns: int = 0
    max_ns: int = 0
    raised: int = 0         # folded calls that raised (only past a recorder's event budget)

    def add(self, duration_ns: int, inside: int = 0, raised: bool = False) -> None:
        """Count one more folded call that lasted ``duration_ns`` and made ``inside`` calls."""
        if self.count == 0 or duration_ns < self.min_ns:
            self.min_ns = duration_ns
        self.max_ns = max(self.max_ns, duration_ns)
        self.count += 1
        self.inside += inside
        self.total_ns += duration_ns
        self.raised += raised

    def merge(self, other: Fold) -> None:
        """Add another aggregate of the same function under the same parent."""
        if other.count == 0:
            return
        if self.count == 0 or other.min_ns < self.min_ns:
            self.min_ns = other.min_ns
        self.max_ns = max(self.max_ns, other.max_ns)
        self.count += other.count
        self.inside += other.inside
        self.total_ns += other.total_ns
        self.raised += other.raised

    @property
    def calls(self) -> int:
        """Every call this aggregate stands for: the folded ones and the calls inside them."""
        return self.count + self.inside


class Siblings:
    """The children of one parent seen so far: calls kept per function, and the folds."""

    __slots__ = ("folds", "keep", "kept")

    def __init__(self, keep: int) -> None:
        """``keep`` calls of each function are kept in detail (0: keep every call)."""
        self.keep = keep
        self.kept: dict[Hashable, int] = {}
        self.folds: dict[Hashable, Fold] = {}

    def admit(self, function: Hashable, raised: bool) -> bool:
        """True if a call of ``function`` is kept in detail (and count it), False to fold it."""
        if raised:
            return True
        if not self.keep:
            return True
        seen = self.kept.get(function, 0)
        if seen >= self.keep:
            return False
        self.kept[function] = seen + 1
        return True

    def fold(self, function: Hashable) -> tuple[Fold, bool]:
        """The aggregate for ``function`` under this parent, and whether it is new."""
        fold = self.folds.get(function)
        if fold is None:
            fold = self.folds[function] = Fold()
            return fold, True
        return fold, False
