# Tests of the local launcher (moe-cluster) and the CLI (moe-cli).

# Topology parsing, validation, placement and server command lines.
moe_test(topology_test topology_test.cc topology_errors_test.cc)
target_link_libraries(topology_test PRIVATE moe_cluster_topology)
target_compile_definitions(topology_test PRIVATE
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# Child-process supervision with standard system programs.
moe_test(process_supervisor_test process_supervisor_test.cc)
target_link_libraries(process_supervisor_test PRIVATE moe_cluster_launcher)

# A stand-in for a server binary (see fake_server_main.cc).
add_executable(fake_server fake_server_main.cc)
target_link_libraries(fake_server PRIVATE moe_rpc)
set_target_properties(fake_server PROPERTIES
  RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

# Helpers for tests that run the real binaries.
add_library(moe_process_test_util STATIC process_util.cc)
target_link_libraries(moe_process_test_util PUBLIC moe_test_support
  GTest::gtest)
# A cluster started by the real launcher (LaunchedCluster), compiled once
# for every end-to-end test.
add_library(moe_launched_cluster STATIC launched_cluster.cc)
target_link_libraries(moe_launched_cluster PUBLIC moe_process_test_util
  moe_rpc absl::strings)
add_dependencies(moe_launched_cluster moe-cluster)
target_compile_definitions(moe_launched_cluster PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# The real moe-cluster binary. RealBinariesStartServeAndStop runs the real
# attention_server and gateway; the other tests use fake_server for them.
moe_test(moe_cluster_test moe_cluster_test.cc)
target_link_libraries(moe_cluster_test PRIVATE moe_process_test_util moe_rpc
  absl::strings)
add_dependencies(moe_cluster_test moe-cluster fake_server expert_server router)
target_compile_definitions(moe_cluster_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  FAKE_SERVER_BIN="$<TARGET_FILE:fake_server>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# moe-cli: flag handling as units, the binary against a fake gateway.
moe_test(moe_cli_test moe_cli_test.cc)
target_link_libraries(moe_cli_test PRIVATE moe_process_test_util moe_cli_lib
  moe_tool_command_line moe_rpc absl::flags absl::synchronization)
add_dependencies(moe_cli_test moe-cli)
target_compile_definitions(moe_cli_test PRIVATE
  MOE_CLI_BIN="$<TARGET_FILE:moe-cli>")

# The servers the launcher starts may be defined after this file is read
# (attention_server, gateway); depend on them once every directory is in.
function(moe_launcher_test_server_dependencies)
  foreach(server expert_server router attention_server gateway moe-cli)
    if(TARGET ${server})
      add_dependencies(moe_cluster_test ${server})
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR}
  CALL moe_launcher_test_server_dependencies)

# End-to-end: clusters of real processes started by the real launcher.
moe_test(cluster_e2e_test cluster_e2e_test.cc
  reference_capacity.cc)
target_link_libraries(cluster_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(cluster_e2e_test PRIVATE moe_process_test_util
  moe_cluster_checks moe_rpc absl::strings)
add_dependencies(cluster_e2e_test moe-cluster expert_server router
  attention_server gateway moe-cli moe-generate)
target_compile_definitions(cluster_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_CLI_BIN="$<TARGET_FILE:moe-cli>"
  MOE_GENERATE_BIN="$<TARGET_FILE:moe-generate>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# End-to-end prefill/decode disaggregation, failures and cancellations.
moe_test(disaggregation_e2e_test disaggregation_e2e_test.cc)
target_link_libraries(disaggregation_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(disaggregation_e2e_test PRIVATE moe_process_test_util
  moe_cluster_checks moe_rpc absl::strings)
add_dependencies(disaggregation_e2e_test moe-cluster expert_server router
  attention_server gateway)
target_compile_definitions(disaggregation_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# The real Prometheus server scraping a local cluster (issue 5).
moe_test(observability_e2e_test observability_e2e_test.cc)
target_link_libraries(observability_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(observability_e2e_test PRIVATE moe_process_test_util
  moe_cluster_checks moe_rpc absl::strings nlohmann_json::nlohmann_json)
add_dependencies(observability_e2e_test moe-cluster expert_server router
  attention_server gateway)
target_compile_definitions(observability_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# Health while starting and SIGTERM drain of the real server processes.
moe_test(server_lifecycle_test server_lifecycle_test.cc)
target_link_libraries(server_lifecycle_test PRIVATE moe_launched_cluster)
target_link_libraries(server_lifecycle_test PRIVATE moe_process_test_util
  moe_reliability_test_util
  moe_cluster_checks moe_rpc absl::strings)
add_dependencies(server_lifecycle_test moe-cluster expert_server router
  attention_server gateway)
target_compile_definitions(server_lifecycle_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_BIN_DIR="$<TARGET_FILE_DIR:gateway>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# moe-loadgen against a local cluster (issue 6).
moe_test(loadgen_e2e_test loadgen_e2e_test.cc)
target_link_libraries(loadgen_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(loadgen_e2e_test PRIVATE moe_process_test_util
  moe_reliability_test_util
  moe_rpc absl::strings nlohmann_json::nlohmann_json)
add_dependencies(loadgen_e2e_test moe-cluster expert_server router
  attention_server gateway moe-loadgen)
target_compile_definitions(loadgen_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_LOADGEN_BIN="$<TARGET_FILE:moe-loadgen>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# End-to-end: DeepSeek (MLA, DeepSeekMoE routing) in three topologies.
moe_test(deepseek_cluster_e2e_test deepseek_cluster_e2e_test.cc)
target_link_libraries(deepseek_cluster_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(deepseek_cluster_e2e_test PRIVATE moe_process_test_util
  moe_cluster_checks moe_rpc absl::strings)
add_dependencies(deepseek_cluster_e2e_test moe-cluster expert_server router
  attention_server gateway)
target_compile_definitions(deepseek_cluster_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# Attention servers dispatching MoE steps to the expert servers themselves.
moe_test(direct_dispatch_e2e_test direct_dispatch_e2e_test.cc)
target_link_libraries(direct_dispatch_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(direct_dispatch_e2e_test PRIVATE moe_process_test_util
  moe_cluster_checks moe_reliability_test_util moe_rpc absl::strings)
add_dependencies(direct_dispatch_e2e_test moe-cluster expert_server router
  attention_server gateway)
target_compile_definitions(direct_dispatch_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
