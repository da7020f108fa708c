# chat_template_test: core/text/chat_template.h. The real Mixtral, Qwen3 and
# DeepSeek-V3 templates (tests/data/chat_templates and those of the installed
# tokenizer packages) and synthetic ones, byte for byte against
# @huggingface/jinja (tests/text/jinja_reference.mjs, run with node; skipped
# without it); unit tests of the Jinja subset and of its errors and limits.
moe_test(chat_template_test chat_template_test.cc
  PROPERTIES FIXTURES_REQUIRED moe_text_node
  ENVIRONMENT "MOE_TEXT_NODE_DIR=${CMAKE_BINARY_DIR}/text-node")
target_link_libraries(chat_template_test PRIVATE moe_text moe_process_test_util
  absl::strings)
target_compile_definitions(chat_template_test PRIVATE
  MOE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
