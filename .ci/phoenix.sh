#!/usr/bin/env bash
# Install Arize Phoenix, the real OTLP backend of tests/test_e2e_phoenix.py, into a virtualenv of
# its own (never into the project's venvs: it is ~830 MB with its own OpenTelemetry pins).
#   .ci/phoenix.sh [PYTHON]     PYTHON: the interpreter (>= 3.12) to build the venv from
# Prints the absolute path of the venv's python, which the test also finds by itself at
# .venv-phoenix/bin/python (FLOWTRACE_PHOENIX_PYTHON overrides). Quick no-op once installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FLOWTRACE_PHOENIX_VENV:-.venv-phoenix}"
version="${FLOWTRACE_PHOENIX_VERSION:-20.26.1}"   # the version the test was written against
if ! "$venv/bin/python" -c 'import importlib.metadata as m; m.version("arize-phoenix")' \
     >/dev/null 2>&1; then
  python="${1:-python3.12}"
  log="$venv/install.log"
  echo "== installing arize-phoenix==$version into $venv (a few minutes; log: $log)" >&2
  mkdir -p "$venv"
  if ! { "$python" -m venv "$venv" &&
         "$venv/bin/python" -m pip install -q --upgrade pip &&
         "$venv/bin/python" -m pip install -q "arize-phoenix==$version"; } > "$log" 2>&1; then
    cat "$log" >&2; echo "phoenix.sh: installing Phoenix into $venv failed" >&2; exit 1
  fi
fi
echo "$(cd "$venv" && pwd)/bin/python"
