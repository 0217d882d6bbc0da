#!/usr/bin/env bash
# Install what the browser tests need, idempotently: Debian's `chromium` package (tests/test_browser.py,
# tests/test_dbsc_browser.py) and `libnss3-tools`, whose `certutil` makes the browser trust a test CA
# (tests/tls_proxy.py: DBSC needs HTTPS the browser trusts). Playwright for Python comes from
# requirements-dev.txt and drives this system browser; `playwright install` (a browser download) is never used.
#
#   scripts/ci-browser.sh        install what is missing
set -euo pipefail

packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v certutil >/dev/null 2>&1 || packages+=(libnss3-tools)
if [[ ${#packages[@]} -eq 0 ]]; then
    echo "chromium: $(chromium --version 2>/dev/null | head -1) and certutil already installed"
    exit 0
fi
sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    sudo=(sudo)
fi
# Wait for another apt run (another install script) instead of failing on its lock.
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${packages[@]}" >/dev/null
echo "installed ${packages[*]}: $(chromium --version 2>/dev/null | head -1); $(command -v certutil)"
