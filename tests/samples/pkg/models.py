"""Sample submodule for include/exclude patterns."""

from samples import shapes


def build(n):
    return shapes.double(n)
