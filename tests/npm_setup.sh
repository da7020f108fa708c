#!/usr/bin/env bash
# Installs a check's node packages (PKG_DIR/package.json, pinned by
# PKG_DIR/package-lock.json) into NODE_DIR/node_modules, never into the
# source tree, and only when they are missing or the lock file changed.
#   tests/npm_setup.sh LABEL PKG_DIR NODE_DIR
# LABEL names the checks in messages. Exit codes: 0 ready, 1 npm failed
# (message says why), 77 npm not found (CTest's SKIP_RETURN_CODE).
set -euo pipefail

label=${1:?usage: npm_setup.sh LABEL PKG_DIR NODE_DIR}
pkg_dir=${2:?usage: npm_setup.sh LABEL PKG_DIR NODE_DIR}
node_dir=${3:?usage: npm_setup.sh LABEL PKG_DIR NODE_DIR}

if ! command -v npm >/dev/null 2>&1; then
  echo "SKIPPED: npm not found (install nodejs and npm to run the $label)"
  exit 77
fi

mkdir -p "$node_dir"
if [ -f "$node_dir/node_modules/.package-lock.json" ] &&
   cmp -s "$pkg_dir/package-lock.json" "$node_dir/package-lock.json"; then
  echo "$label: node packages already in $node_dir"
  exit 0
fi

cp "$pkg_dir/package.json" "$pkg_dir/package-lock.json" "$node_dir/"
log="$node_dir/npm-ci.log"
echo "$label: npm ci into $node_dir"
if ! npm ci --prefix "$node_dir" --no-audit --no-fund >"$log" 2>&1; then
  cat "$log"
  # A half-written tree must not pass for installed next time.
  rm -rf "$node_dir/node_modules" "$node_dir/package-lock.json"
  echo "$label: npm ci failed (log above, also in $log). Is the npm" \
       "registry ($(npm config get registry 2>/dev/null)) reachable from here?" \
       "Point npm at a reachable one (npm config set registry URL) and rerun." >&2
  exit 1
fi
