#!/usr/bin/env bash
# The portfolio page's browser test (tests/test_scan_browser.py) drives Debian's headless
# Chromium. Install it where it is missing and we can (root with apt-get); elsewhere say so in
# one line: the test then skips, except in CI (CI=true), where it fails naming the install.
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "ensure-chromium: installing Debian's chromium for the browser test"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  exit 0
fi
echo "ensure-chromium: no chromium and no way to install it here (apt-get as root)"
