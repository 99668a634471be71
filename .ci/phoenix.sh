#!/usr/bin/env bash
# Install Arize Phoenix, the real OTLP backend of tests/test_e2e_phoenix.py, into a virtualenv of
# its own (never into the project's venvs: it is ~830 MB with its own OpenTelemetry pins).
#   .ci/phoenix.sh [PYTHON]     PYTHON: an interpreter >= 3.12 to build the venv from
# Prints the venv's python, which the test finds by itself at .venv-phoenix/bin/python (or via
# FLOWTRACE_PHOENIX_PYTHON). Does nothing when Phoenix is already installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FLOWTRACE_PHOENIX_VENV:-.venv-phoenix}"
version="${FLOWTRACE_PHOENIX_VERSION:-20.26.1}"   # the version the test was written against
if ! "$venv/bin/python" -c 'import phoenix.server.main' >/dev/null 2>&1; then
  python="${1:-python3.12}"
  echo "== installing arize-phoenix==$version into $venv (a few minutes)" >&2
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q "arize-phoenix==$version" >&2
fi
echo "$(cd "$venv" && pwd)/bin/python"
