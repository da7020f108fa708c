#!/usr/bin/env bash
# Installs the manifest checks' node packages (package.json, pinned by
# package-lock.json) into NODE_DIR/node_modules, never into the source tree,
# and only when they are missing or the lock file changed.
#   tests/manifests/setup.sh NODE_DIR
# Exit codes: 0 ready, 1 npm failed (message says why), 77 npm not found
# (CTest's SKIP_RETURN_CODE for the manifest tests).
set -euo pipefail

node_dir=${1:?usage: setup.sh NODE_DIR}
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v npm >/dev/null 2>&1; then
  echo "SKIPPED: npm not found (install nodejs and npm to run the manifest checks)"
  exit 77
fi

mkdir -p "$node_dir"
if [ -f "$node_dir/node_modules/.package-lock.json" ] &&
   cmp -s "$here/package-lock.json" "$node_dir/package-lock.json"; then
  echo "manifest checks: node packages already in $node_dir"
  exit 0
fi

cp "$here/package.json" "$here/package-lock.json" "$node_dir/"
log="$node_dir/npm-ci.log"
echo "manifest checks: npm ci into $node_dir"
if ! npm ci --prefix "$node_dir" --no-audit --no-fund >"$log" 2>&1; then
  cat "$log"
  # A half-written tree must not pass for installed next time.
  rm -rf "$node_dir/node_modules" "$node_dir/package-lock.json"
  echo "manifest checks: npm ci failed (log above, also in $log). Is the npm" \
       "registry ($(npm config get registry 2>/dev/null)) reachable from here?" \
       "Point npm at a reachable one (npm config set registry URL) and rerun." >&2
  exit 1
fi
