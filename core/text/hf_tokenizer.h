// The tokenizer of a Hugging Face tokenizer.json (+ tokenizer_config.json).
#ifndef MOE_CORE_TEXT_HF_TOKENIZER_H_
#define MOE_CORE_TEXT_HF_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/text/tokenizer.h"
#include "nlohmann/json.hpp"

namespace moe::text {

// `tokenizer_json` is the parsed tokenizer.json, `config` the parsed
// tokenizer_config.json (null when absent). Errors name the JSON path.
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeHfTokenizer(
    const nlohmann::json& tokenizer_json, const nlohmann::json& config);

// tokenizer_config.json's special tokens and chat template, resolved with
// `token_id`. Shared by both tokenizer kinds.
struct TokenizerConfig {
  TokenizerSpecialTokens special;
  std::string chat_template;
  bool clean_up_tokenization_spaces = false;
};
absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(
    const nlohmann::json& config,
    const std::function<std::optional<int32_t>(const std::string&)>& token_id);

}  // namespace moe::text

#endif  // MOE_CORE_TEXT_HF_TOKENIZER_H_
