"""``python -m flowtrace_otel run ...``: the same as the ``flowtrace-otel`` command."""

from flowtrace_otel.cli import main

raise SystemExit(main())
