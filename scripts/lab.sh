#!/usr/bin/env bash
# Start the course's JupyterLab. This is THE command line: `make lab` runs it, and
# tests/test_lab.py + tests/test_browser.py run it too (with --no-browser), so the tests
# exercise exactly what a learner gets.
#
#   scripts/lab.sh [--port N] [--no-browser] [--jupyter PATH] [--root DIR] [-- EXTRA_JUPYTER_ARGS...]
#
# What it serves:
#   - bound to 127.0.0.1 only, with Jupyter's generated token (authentication never disabled);
#   - the repository as the root, opening notebooks/00_overview.ipynb;
#   - my-work/ (the learner's answers) created from exercises/ first, never overwritten;
#   - new notebooks default to the course kernel "dptlearn";
#   - no network calls for news / update checks on the server side (the matching client
#     settings, which also silence the "get notified about official Jupyter news?" prompt,
#     live in jupyter/overrides.json, installed into the venv by the Makefile).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT=8888
JUPYTER="$ROOT/.venv/bin/jupyter"
OPEN_BROWSER=True

usage() { sed -n '6p' "${BASH_SOURCE[0]}" | sed 's/^#   //' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --port) [ $# -ge 2 ] || usage; PORT="$2"; shift 2 ;;
        --port=*) PORT="${1#*=}"; shift ;;
        --no-browser) OPEN_BROWSER=False; shift ;;
        --jupyter) [ $# -ge 2 ] || usage; JUPYTER="$2"; shift 2 ;;
        --jupyter=*) JUPYTER="${1#*=}"; shift ;;
        --root) [ $# -ge 2 ] || usage; ROOT="$(cd "$2" && pwd)"; shift 2 ;;
        --root=*) ROOT="$(cd "${1#*=}" && pwd)"; shift ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) echo "lab.sh: unknown option: $1" >&2; usage ;;
    esac
done

if [ ! -x "$JUPYTER" ]; then
    echo "lab.sh: $JUPYTER not found; run 'make lab' (it installs the course environment first)" >&2
    exit 1
fi

# The learner's own folder: exercises/ copied into my-work/ on first use; existing files are never touched.
if [ -d "$ROOT/exercises" ]; then
    "$(dirname "$JUPYTER")/python" -m dptlearn.course.workspace --root "$ROOT"
fi

# Jupyter refuses to run as root (containers, CI, cloud notebooks) without --allow-root.
ROOT_ARGS=()
if [ "$(id -u)" -eq 0 ]; then
    ROOT_ARGS=(--allow-root)
fi

# exec: the server *is* this process, so SIGINT/SIGTERM reach it directly.
exec "$JUPYTER" lab \
    --ServerApp.ip=127.0.0.1 \
    --ServerApp.port="$PORT" \
    --ServerApp.open_browser="$OPEN_BROWSER" \
    --ServerApp.root_dir="$ROOT" \
    --LabApp.default_url=/lab/tree/notebooks/00_overview.ipynb \
    --MappingKernelManager.default_kernel_name=dptlearn \
    --LabApp.news_url=None \
    --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
    ${ROOT_ARGS[@]+"${ROOT_ARGS[@]}"} \
    "$@"
