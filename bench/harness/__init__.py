"""The benchmark's machinery; excluded from tracing so each unit of work is its own trace."""

#: ``exclude`` pattern that keeps the harness out of the traces (the driver loop lives here).
EXCLUDE = ("*/bench/harness/*",)
