"""A sample package: its submodule is matched by the package's module pattern."""
