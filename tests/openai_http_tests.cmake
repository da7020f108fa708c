# The OpenAI HTTP API's parts (gateway/http): request parsing and
# validation, response and error bodies, stop strings. The API end to end
# is openai_e2e_test (text_tests.cmake).
moe_test(openai_http_unit_test openai_request_test.cc openai_response_test.cc
  stop_matcher_test.cc)
target_link_libraries(openai_http_unit_test PRIVATE moe_openai_http
  nlohmann_json::nlohmann_json)
