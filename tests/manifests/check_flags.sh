#!/usr/bin/env bash
# Renders deploy/k8s/base and every overlay with kubectl kustomize and checks
# every flag of every container command against the built programs
# (check_flags.js). Usage: check_flags.sh NODE_DIR BIN_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
node_dir="$1"
bin_dir="$2"
if ! command -v kubectl > /dev/null; then
  echo "SKIPPED: kubectl not found (needed to render deploy/k8s)"
  exit 77
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
files=()
for dir in "$root/deploy/k8s/base" "$root"/deploy/k8s/overlays/*/; do
  name="$(basename "$dir")"
  kubectl kustomize "$dir" > "$out/$name.yaml"
  files+=("$out/$name.yaml")
done
node "$here/check_flags.js" "$node_dir" "$bin_dir" "${files[@]}"
