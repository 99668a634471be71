#!/usr/bin/env bash
# Install Debian's Chromium for the HTML report's browser test (tests/test_html_browser.py).
# Prints the browser's path. Idempotent: does nothing when /usr/bin/chromium already runs.
set -euo pipefail
if ! /usr/bin/chromium --version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; } >&2
fi
/usr/bin/chromium --version >&2
echo /usr/bin/chromium
