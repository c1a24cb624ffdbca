#!/usr/bin/env bash
# Install bubblewrap (Debian package `bubblewrap`, /usr/bin/bwrap) for dptlearn-grade's sandbox
# (dptlearn/course/grading/sandbox.py) and tests/test_grade_hostile.py.
#   - quick no-op when bwrap is already there;
#   - otherwise `apt-get update` once, then `apt-get install -y bubblewrap`;
#   - exits non-zero with a message saying why where it cannot install (the grader then falls
#     back to process groups, resource limits and private copies, and says so once).
# Called by `make sandbox-deps` (part of `make test`). BWRAP overrides the path checked.
set -euo pipefail

BWRAP="${BWRAP:-/usr/bin/bwrap}"

fail() {
    echo "install_bwrap.sh: $*" >&2
    exit 1
}

if [ -x "$BWRAP" ]; then
    echo "install_bwrap.sh: $BWRAP is already installed"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "$BWRAP is missing and apt-get is not available (not a Debian/Ubuntu system); install bubblewrap by hand to grade in a sandbox"

if [ "$(id -u)" -ne 0 ]; then
    fail "$BWRAP is missing and installing it needs root; run: sudo apt-get update && sudo apt-get install -y bubblewrap"
fi

echo "install_bwrap.sh: installing Debian's bubblewrap with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update \
    || fail "apt-get update failed (no network or package mirror?)"
apt-get install -y bubblewrap \
    || fail "apt-get install bubblewrap failed"

[ -x "$BWRAP" ] || fail "apt-get installed bubblewrap but $BWRAP is still missing"
echo "install_bwrap.sh: installed $("$BWRAP" --version 2>/dev/null || echo "$BWRAP")"
