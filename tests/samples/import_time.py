"""Sample module that calls a function while it is imported (module code itself is not shown)."""

from samples import shapes

VALUE = shapes.double(21)
