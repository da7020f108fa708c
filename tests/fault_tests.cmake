# Fault scenarios with real processes: expert servers killed (with and
# without replicas) or hung, a decode server killed mid-stream.
moe_test(fault_e2e_test fault_e2e_test.cc)
target_link_libraries(fault_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(fault_e2e_test PRIVATE moe_process_test_util
  moe_reliability_test_util moe_cluster_checks moe_rpc absl::strings)
add_dependencies(fault_e2e_test moe-cluster expert_server router
  attention_server gateway)
target_compile_definitions(fault_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# Online expert rebalancing on real processes: a skewed moe-loadgen
# workload, a rebalance under load, an expert server restarted.
moe_test(eplb_e2e_test eplb_e2e_test.cc)
target_link_libraries(eplb_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(eplb_e2e_test PRIVATE moe_process_test_util
  moe_reliability_test_util moe_cluster_checks moe_rpc absl::strings
  nlohmann_json::nlohmann_json)
add_dependencies(eplb_e2e_test moe-cluster expert_server router
  attention_server gateway moe-loadgen)
target_compile_definitions(eplb_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_LOADGEN_BIN="$<TARGET_FILE:moe-loadgen>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
