# In-process service tests: real servers on ephemeral loopback ports.
moe_test(expert_server_test expert_server_test.cc)
target_link_libraries(expert_server_test PRIVATE moe_expert_server)
