#!/usr/bin/env bash
# Install Debian's Chromium for tests/test_browser.py (driven by Playwright through
# executable_path; Playwright's own browser download is not used).
#   - quick no-op when the browser is already there;
#   - otherwise `apt-get update` once, then `apt-get install -y chromium`;
#   - exits non-zero with a message saying why where it cannot install.
# Called by `make browser-deps` (part of `make test`). CHROMIUM overrides the path checked.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

fail() {
    echo "install_browser.sh: $*" >&2
    exit 1
}

if [ -x "$CHROMIUM" ]; then
    echo "install_browser.sh: $CHROMIUM is already installed"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "$CHROMIUM is missing and apt-get is not available (not a Debian/Ubuntu system); install Chromium by hand to run the browser test"

if [ "$(id -u)" -ne 0 ]; then
    fail "$CHROMIUM is missing and installing it needs root; run: sudo apt-get update && sudo apt-get install -y chromium"
fi

echo "install_browser.sh: installing Debian's chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update \
    || fail "apt-get update failed (no network or package mirror?)"
apt-get install -y chromium \
    || fail "apt-get install chromium failed"

[ -x "$CHROMIUM" ] || fail "apt-get installed chromium but $CHROMIUM is still missing"
echo "install_browser.sh: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
