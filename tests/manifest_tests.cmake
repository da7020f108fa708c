# Checks of the Kubernetes manifests (deploy/k8s), label `manifests`:
# kubectl's built-in kustomize renders the base and every overlay, and a
# node script validates each object against its schema (kubernetes-models)
# and the references between them (tests/manifests/README.md).
#
# The node packages go to <build>/manifest-node (npm ci, pinned by
# tests/manifests/package-lock.json; once, by manifests_node_packages). The
# tests are reported as skipped (exit 77) without kubectl, node or npm, and
# fail with a message when npm cannot reach its registry.
set(MOE_MANIFEST_SCRIPTS ${CMAKE_SOURCE_DIR}/tests/manifests)
set(MOE_MANIFEST_NODE_DIR ${CMAKE_BINARY_DIR}/manifest-node)

add_test(NAME manifests_node_packages
  COMMAND bash ${MOE_MANIFEST_SCRIPTS}/setup.sh ${MOE_MANIFEST_NODE_DIR})
set_tests_properties(manifests_node_packages PROPERTIES
  FIXTURES_SETUP moe_manifest_node
  LABELS manifests TIMEOUT 300 SKIP_RETURN_CODE 77)

# deploy/k8s/base and every deploy/k8s/overlays/* must pass.
add_test(NAME manifests_check
  COMMAND bash ${MOE_MANIFEST_SCRIPTS}/check_manifests.sh
    ${MOE_MANIFEST_NODE_DIR})
set_tests_properties(manifests_check PROPERTIES
  FIXTURES_REQUIRED moe_manifest_node
  LABELS manifests TIMEOUT 300 SKIP_RETURN_CODE 77)

# Each tests/manifests/broken/<case> must fail the checks with the messages
# of its expected.txt: proof that the checks catch what they claim to.
foreach(case service-selector missing-configmap-key expert-count)
  add_test(NAME manifests_broken_${case}
    COMMAND bash ${MOE_MANIFEST_SCRIPTS}/expect_failure.sh
      ${MOE_MANIFEST_NODE_DIR} ${case})
  set_tests_properties(manifests_broken_${case} PROPERTIES
    FIXTURES_REQUIRED moe_manifest_node
    LABELS manifests TIMEOUT 300 SKIP_RETURN_CODE 77)
endforeach()

# Every flag the manifests pass to our programs exists in the programs built
# here (`--helpfull`), so a renamed flag cannot leave the pods crash-looping.
add_test(NAME manifests_flags
  COMMAND bash ${MOE_MANIFEST_SCRIPTS}/check_flags.sh ${MOE_MANIFEST_NODE_DIR}
    ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(manifests_flags PROPERTIES
  FIXTURES_REQUIRED moe_manifest_node
  LABELS manifests TIMEOUT 300 SKIP_RETURN_CODE 77)
