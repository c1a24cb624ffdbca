#!/usr/bin/env bash
# Install Debian's Chromium for tests/test_browser.py (driven by Playwright through
# executable_path; Playwright's own browser download is not used).
# Called by `make browser-deps` (part of `make test`). CHROMIUM overrides the path checked.
set -euo pipefail
CALLER="$0" exec bash "$(dirname "$0")/apt_install.sh" chromium "${CHROMIUM:-/usr/bin/chromium}" "the real-browser test"
