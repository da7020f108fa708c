#!/usr/bin/env bash
# Schema and cross-reference checks of deploy/k8s (base and every overlay,
# or the kustomization directories given).
#   tests/manifests/check_manifests.sh NODE_DIR [KUSTOMIZATION_DIR ...]
# Exit codes: 0 pass, 1 a check failed, 77 skipped (kubectl or node missing).
set -euo pipefail

node_dir=${1:?usage: check_manifests.sh NODE_DIR [DIR ...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
source "$here/prerequisites.sh"

exec node "$here/check.js" --node_dir "$node_dir" --kubectl "$kubectl" \
  --root "$here/../.." "$@"
