#!/usr/bin/env bash
# Install the browser of the browser tests (tests/test_browser.py), idempotently:
# Debian's `chromium` package. Playwright for Python comes from requirements-dev.txt
# and drives this system browser; `playwright install` (a browser download) is never used.
#
#   scripts/ci-browser.sh        install chromium unless it is already there
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium: $(chromium --version 2>/dev/null | head -1) already installed"
    exit 0
fi
sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    sudo=(sudo)
fi
# Wait for another apt run (another install script) instead of failing on its lock.
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
echo "chromium: $(chromium --version 2>/dev/null | head -1) installed"
