#!/usr/bin/env bash
# Install bubblewrap (Debian package `bubblewrap`, /usr/bin/bwrap) for dptlearn-grade's sandbox
# (dptlearn/course/grading/sandbox.py) and tests/test_grade_hostile.py. Where it cannot be
# installed the grader falls back to process groups, resource limits and private copies, and
# says so once. Called by `make sandbox-deps` (part of `make test`). BWRAP overrides the path checked.
set -euo pipefail
CALLER="$0" exec bash "$(dirname "$0")/apt_install.sh" bubblewrap "${BWRAP:-/usr/bin/bwrap}" "dptlearn-grade's sandbox"
