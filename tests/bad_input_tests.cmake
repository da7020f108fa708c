# Bad input across the public and internal APIs, malformed files and bad
# flags, against one real 1p1d cluster (issue: reliability).
moe_test(bad_input_e2e_test bad_input_e2e_test.cc)
target_link_libraries(bad_input_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(bad_input_e2e_test PRIVATE moe_process_test_util
  moe_cluster_checks moe_rpc absl::strings)
add_dependencies(bad_input_e2e_test moe-cluster expert_server router
  attention_server gateway)
target_compile_definitions(bad_input_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_BIN_DIR="$<TARGET_FILE_DIR:gateway>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
