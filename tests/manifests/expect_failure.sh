#!/usr/bin/env bash
# Runs the checks on a deliberately broken kustomization (broken/CASE) and
# passes only if they fail (exit 1) and print every line of
# broken/CASE/expected.txt (fixed strings).
#   tests/manifests/expect_failure.sh NODE_DIR CASE
# Exit codes: 0 the checks caught it, 1 they did not, 77 skipped.
set -euo pipefail

node_dir=${1:?usage: expect_failure.sh NODE_DIR CASE}
case_name=${2:?usage: expect_failure.sh NODE_DIR CASE}
here=$(cd "$(dirname "$0")" && pwd)
source "$here/prerequisites.sh"
case_dir="$here/broken/$case_name"

set +e
output=$(node "$here/check.js" --node_dir "$node_dir" --kubectl "$kubectl" \
  --root "$here/../.." "$case_dir" 2>&1)
status=$?
set -e
echo "$output"

if [ "$status" -ne 1 ]; then
  echo "expect_failure: check.js exited $status on broken/$case_name; want 1" \
       "(a failed check)" >&2
  exit 1
fi
missing=0
while IFS= read -r line; do
  [ -z "$line" ] && continue
  if ! grep -qF -- "$line" <<<"$output"; then
    echo "expect_failure: broken/$case_name: expected message not printed: $line" >&2
    missing=1
  fi
done <"$case_dir/expected.txt"
if [ "$missing" -ne 0 ]; then exit 1; fi
echo "expect_failure: broken/$case_name failed as expected"
