# In-process service tests: real servers on ephemeral loopback ports.
moe_test(expert_server_test expert_server_test.cc)
target_link_libraries(expert_server_test PRIVATE moe_expert_server)
moe_test(router_server_test router_server_test.cc)
target_link_libraries(router_server_test PRIVATE moe_router_server moe_expert_server)
