"""The floor: no-op ``sys.monitoring`` callbacks on PY_START/PY_RETURN, nothing recorded.

User code gets ``None`` (keep calling), everything else ``DISABLE`` (never called again for that
code location). What remains per user call is the price of two Python callbacks plus one set
lookup: the least any pure-Python tracer can pay.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from typing import Any

M = sys.monitoring


def user_code_ids(modules: Iterable[types.ModuleType]) -> frozenset[int]:
    """ids of the code objects the tracer counts as user code (functions, not genexprs)."""
    ids: set[int] = set()
    for module in modules:
        for value in vars(module).values():
            code = getattr(value, "__code__", None)
            if isinstance(code, types.CodeType) and value.__module__ == module.__name__:
                ids.add(id(code))
    return frozenset(ids)


def install(modules: Iterable[types.ModuleType]) -> int:
    """Register the no-op callbacks on a free tool id (3 or 4); returns the id."""
    user = user_code_ids(modules)
    disable = M.DISABLE

    def py_start(code: types.CodeType, offset: int) -> Any:
        return None if id(code) in user else disable

    def py_return(code: types.CodeType, offset: int, retval: object) -> Any:
        return None if id(code) in user else disable

    for tool_id in (3, 4):
        if M.get_tool(tool_id) is None:
            break
    else:
        raise RuntimeError("sys.monitoring tool ids 3 and 4 are both taken")
    M.use_tool_id(tool_id, "bench-floor")
    M.register_callback(tool_id, M.events.PY_START, py_start)
    M.register_callback(tool_id, M.events.PY_RETURN, py_return)
    M.set_events(tool_id, M.events.PY_START | M.events.PY_RETURN)
    return tool_id
