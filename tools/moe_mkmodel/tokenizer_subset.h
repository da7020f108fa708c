// A real Hugging Face tokenizer cut down to a generated model's vocabulary,
// so that a small random model "speaks" real tokens: its ids decode to real
// text pieces and text prompts encode into ids it accepts.
//
// Works on tokenizer.json files of model type BPE (byte-level, or
// SentencePiece-style with byte fallback). The cut keeps the entries up to
// the byte tokens at their ids (the first 256 symbols of a byte-level
// vocabulary, or <unk>, <s>, </s>, <0x00>..<0xFF> with byte fallback: every
// text still encodes), then the single Latin characters, then the results
// of the merges in their priority order whose parts are kept, numbered
// after them; a merge is kept when both its parts and its result are. The
// added tokens that fall outside the size (Qwen's <|im_start|>,
// <|endoftext|>...) and that the config or chat template uses are moved to
// the top ids.
#ifndef MOE_TOOLS_MOE_MKMODEL_TOKENIZER_SUBSET_H_
#define MOE_TOOLS_MOE_MKMODEL_TOKENIZER_SUBSET_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

struct TokenizerSubset {
  std::string tokenizer_json;         // contents of tokenizer.json
  std::string tokenizer_config_json;  // of tokenizer_config.json ("" if none)
  // Ids of the config's bos / eos tokens in the subset, when it names them.
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
};

// Reads SOURCE_DIR/tokenizer.json (and tokenizer_config.json when present)
// and cuts them to `vocab_size` ids. A non-empty `chat_template_file`
// replaces the config's chat_template with that file's text. Errors name the
// file and the field.
absl::StatusOr<TokenizerSubset> MakeTokenizerSubset(
    absl::string_view source_dir, int32_t vocab_size,
    absl::string_view chat_template_file = "");

// Writes the subset's files into `model_dir`.
absl::Status WriteTokenizerSubset(const TokenizerSubset& subset,
                                  absl::string_view model_dir);

}  // namespace moe

#endif  // MOE_TOOLS_MOE_MKMODEL_TOKENIZER_SUBSET_H_
