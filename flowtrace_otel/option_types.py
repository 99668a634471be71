"""Value types of command-line options shared by ``flowtrace-otel`` and the pytest plugin.

Its own module so that the pytest plugin can use them without importing the CLI.
"""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """An integer >= 0 for a command-line option."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value
