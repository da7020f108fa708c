# Sourced by the manifest test scripts: finds kubectl and node, or exits 77
# (CTest's SKIP_RETURN_CODE for these tests) saying what is missing, and
# makes sure the node packages are installed in $node_dir.
# Sets: kubectl (path; $MOE_KUBECTL overrides the lookup).

kubectl=${MOE_KUBECTL:-$(command -v kubectl || true)}
if [ -z "$kubectl" ] || [ ! -x "$kubectl" ]; then
  echo "SKIPPED: kubectl not found (the manifest checks render deploy/k8s" \
       "with kubectl's built-in kustomize; install kubectl or set MOE_KUBECTL)"
  exit 77
fi
if ! command -v node >/dev/null 2>&1; then
  echo "SKIPPED: node not found (install nodejs and npm to run the manifest checks)"
  exit 77
fi
# A no-op once the manifests_node_packages test installed them; its output
# only matters when it fails.
setup_output=$(bash "$(dirname "${BASH_SOURCE[0]}")/setup.sh" "$node_dir") || {
  setup_status=$?
  echo "$setup_output"
  exit "$setup_status"
}
