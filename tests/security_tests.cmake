# Transport security (TLS, mutual TLS) and the public API's bearer token.
# TLS material is generated at test time by security/make_test_certs.sh.

# Token and PEM loading, credentials, the topology's "security" section.
moe_test(security_test security_test.cc security_test_util.cc)
target_link_libraries(security_test PRIVATE moe_security moe_rpc
  moe_process_test_util moe_cluster_topology absl::strings)
target_compile_definitions(security_test PRIVATE
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# A TLS cluster of real processes started by the real launcher.
moe_test(security_e2e_test security_e2e_test.cc security_test_util.cc)
target_link_libraries(security_e2e_test PRIVATE moe_launched_cluster)
target_link_libraries(security_e2e_test PRIVATE moe_security moe_rpc
  moe_process_test_util moe_cluster_checks absl::strings
  nlohmann_json::nlohmann_json)
add_dependencies(security_e2e_test moe-cluster expert_server router
  attention_server gateway moe-cli moe-loadgen)
target_compile_definitions(security_e2e_test PRIVATE
  MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
  MOE_CLI_BIN="$<TARGET_FILE:moe-cli>"
  MOE_LOADGEN_BIN="$<TARGET_FILE:moe-loadgen>"
  MOE_BIN_DIR="$<TARGET_FILE_DIR:gateway>"
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
