// A real Hugging Face tokenizer cut down to a generated model's vocabulary,
// so that a small random model "speaks" real tokens: its ids decode to real
// text pieces and text prompts encode into ids it accepts.
//
// Works on tokenizer.json files of model type BPE (byte-level, or
// SentencePiece-style with byte fallback): the vocabulary keeps its ids
// below the size; the added tokens that fall outside it (Qwen's
// <|im_start|>, <|endoftext|>...) are moved to the top ids, replacing the
// vocabulary entries there; a merge is kept only when both its parts and its
// result are kept. The byte tokens (the first 256 symbols of a byte-level
// vocabulary, or <0x00>..<0xFF> with byte fallback) must fit, so that every
// text still encodes.
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
