# Router tests.
moe_test(placement_table_test placement_table_test.cc)
target_link_libraries(placement_table_test PRIVATE moe_router_plan)
moe_test(dispatch_plan_test dispatch_plan_test.cc)
target_link_libraries(dispatch_plan_test PRIVATE moe_router_plan)
moe_test(eplb_test eplb_test.cc)
target_link_libraries(eplb_test PRIVATE moe_router_plan)
