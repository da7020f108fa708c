# Reliability end-to-end scenarios against clusters of real processes started
# by the real launcher (issue: reliability): open-loop overload at about 3x
# capacity, and soak rounds with cancellations and client disconnects.
add_library(moe_reliability_test_util STATIC reliability_util.cc)
target_link_libraries(moe_reliability_test_util PUBLIC moe_test_support moe_rpc
  absl::strings)

moe_test(overload_e2e_test overload_e2e_test.cc)
target_link_libraries(overload_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(overload_e2e_test PRIVATE moe_process_test_util
  moe_reliability_test_util moe_cluster_checks moe_rpc absl::strings
  absl::synchronization)
add_dependencies(overload_e2e_test moe-cluster expert_server router
  attention_server gateway)
target_compile_definitions(overload_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

moe_test(soak_e2e_test soak_e2e_test.cc)
target_link_libraries(soak_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(soak_e2e_test PRIVATE moe_process_test_util
  moe_reliability_test_util moe_cluster_checks moe_rpc absl::strings)
add_dependencies(soak_e2e_test moe-cluster expert_server router
  attention_server gateway moe-cli)
target_compile_definitions(soak_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_CLI_BIN="$<TARGET_FILE:moe-cli>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
