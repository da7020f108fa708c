# In-process service tests: real servers on ephemeral loopback ports.
moe_test(expert_server_test expert_server_test.cc)
target_link_libraries(expert_server_test PRIVATE moe_expert_server)
moe_test(router_server_test router_server_test.cc)
target_link_libraries(router_server_test PRIVATE moe_router_server moe_expert_server
  moe_attention_server)
# The decode side's K/V lease, on a clock the test moves.
moe_test(kv_lease_test kv_lease_test.cc)
target_link_libraries(kv_lease_test PRIVATE moe_attention_server)
# A whole cluster in one process (tests/inprocess_cluster.h).
add_library(moe_inprocess_cluster STATIC inprocess_cluster.cc)
target_link_libraries(moe_inprocess_cluster PUBLIC moe_test_support
  moe_expert_server moe_router_server moe_attention_server moe_gateway)
moe_test(cluster_inprocess_test cluster_inprocess_test.cc)
target_link_libraries(cluster_inprocess_test PRIVATE moe_inprocess_cluster)

# Client helpers and checks shared by the in-process and end-to-end tests.
add_library(moe_cluster_checks STATIC generate_client.cc cluster_checks.cc
  background_stream.cc)
target_link_libraries(moe_cluster_checks PUBLIC moe_test_support moe_rpc)
target_link_libraries(cluster_inprocess_test PRIVATE moe_cluster_checks)
# The servers' Prometheus metric classes and placement by ordinal.
moe_test(server_metrics_test server_metrics_test.cc)
target_link_libraries(server_metrics_test PRIVATE moe_gateway moe_router_server
  moe_expert_server)
moe_test(rebalance_hierarchical_test rebalance_hierarchical_test.cc
  rebalance_util.cc)
target_link_libraries(rebalance_hierarchical_test PRIVATE moe_router_server
  moe_expert_server)
moe_test(rebalance_test rebalance_test.cc rebalance_util.cc)
target_link_libraries(rebalance_test PRIVATE moe_router_server moe_expert_server
  moe_process_test_util)
add_dependencies(rebalance_test moe-cli)
target_compile_definitions(rebalance_test PRIVATE
  MOE_CLI_BIN="$<TARGET_FILE:moe-cli>")
# The same-host shared-memory transport: segment, events, link and channel.
moe_test(shm_segment_test shm_segment_test.cc)
target_link_libraries(shm_segment_test PRIVATE moe_rpc)
moe_test(shm_transport_test shm_transport_test.cc)
target_link_libraries(shm_transport_test PRIVATE moe_router_server moe_expert_server)
