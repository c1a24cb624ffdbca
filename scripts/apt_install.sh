#!/usr/bin/env bash
# Install one Debian package that a test or tool needs, the same way for all of them:
#   scripts/apt_install.sh PACKAGE BINARY PURPOSE
#   - quick no-op when BINARY is already there;
#   - otherwise `apt-get update` once, then `apt-get install -y PACKAGE`;
#   - exits non-zero with a message saying why where it cannot install (callers then skip
#     or fall back, and say so).
# Used by scripts/install_browser.sh (Chromium) and scripts/install_bwrap.sh (bubblewrap).
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: apt_install.sh PACKAGE BINARY PURPOSE" >&2; exit 2; }
PACKAGE="$1"; BINARY="$2"; PURPOSE="$3"
ME="$(basename "${CALLER:-$0}")"

fail() {
    echo "$ME: $*" >&2
    exit 1
}

if [ -x "$BINARY" ]; then
    echo "$ME: $BINARY is already installed"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "$BINARY is missing and apt-get is not available (not a Debian/Ubuntu system); install $PACKAGE by hand for $PURPOSE"

if [ "$(id -u)" -ne 0 ]; then
    fail "$BINARY is missing and installing it needs root; run: sudo apt-get update && sudo apt-get install -y $PACKAGE"
fi

echo "$ME: installing Debian's $PACKAGE with apt-get (for $PURPOSE)"
export DEBIAN_FRONTEND=noninteractive
apt-get update \
    || fail "apt-get update failed (no network or package mirror?)"
apt-get install -y "$PACKAGE" \
    || fail "apt-get install $PACKAGE failed"

[ -x "$BINARY" ] || fail "apt-get installed $PACKAGE but $BINARY is still missing"
echo "$ME: installed $("$BINARY" --version 2>/dev/null || echo "$BINARY")"
