"""A program that traces itself with the API: its output must not change under an outer tracer.

Run plainly, under ``flowtrace-otel run`` (tree and --otel) and with ``FLOWTRACE_OTEL=1``,
stdout, the program's part of stderr and the exit code must be the same.
"""

import sys

from flowtrace_otel import (
    TraceSession,
    active_tracing,
    format_tree,
    start_tracing,
    stop_tracing,
    trace,
)


def leaf(text):
    return text.upper()


def branch(n):
    return [leaf(f"value-number-{i}") for i in range(n)]


@trace(show_timing=False, show_result=True)
def decorated(n):
    return branch(n)


def main():
    # its own options: short reprs, no results, only this file's functions
    with TraceSession(max_repr=12, capture_result=False) as session:
        branch(2)
    print(format_tree(session.events, show_timing=False))
    print("session names", [event.func_name for event in session.events])

    start_tracing(max_items=2)
    branch(1)
    events = stop_tracing()
    print("start_tracing saw", len(events), "calls")

    with active_tracing() as block:
        leaf("x")
    print("active_tracing saw", [e.func_name for e in block.events])

    decorated(2)  # prints its tree to stderr
    print("done")
    return 3


if __name__ == "__main__":
    sys.exit(main())
