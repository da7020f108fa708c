#!/usr/bin/env bash
# Installs the manifest checks' node packages (package.json, pinned by
# package-lock.json) into NODE_DIR/node_modules (tests/npm_setup.sh).
#   tests/manifests/setup.sh NODE_DIR
# Exit codes: 0 ready, 1 npm failed (message says why), 77 npm not found
# (CTest's SKIP_RETURN_CODE for the manifest tests).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec bash "$here/../npm_setup.sh" "manifest checks" "$here" "${1:?usage: setup.sh NODE_DIR}"
