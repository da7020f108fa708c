#ifndef MOE_CORE_TEXT_TOKENIZER_H_
#define MOE_CORE_TEXT_TOKENIZER_H_

// Text <-> token ids for a Hugging Face checkpoint folder.
//
// Load() reads, from the folder:
//   - tokenizer.json (the `tokenizers` library's format): BPE models, both
//     byte-level (Qwen2/Qwen3, OLMoE, DeepSeek) and SentencePiece-style with
//     byte fallback (Llama, Mistral/Mixtral), with the normalizer,
//     pre-tokenizer, post-processor, added tokens and decoder the file
//     declares;
//   - else tokenizer.model (SentencePiece BPE models, read natively:
//     core/text/spm_backend.h);
//   - tokenizer_config.json when present: bos/eos/pad tokens, add_bos_token,
//     add_eos_token, chat_template.
// Anything the file declares that is not supported is refused with an error
// naming the JSON path (e.g. "tokenizer.json: pre_tokenizer.type 'Foo' is not
// supported").
//
// A Tokenizer is immutable after Load and safe to use from many threads.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moe {

struct TokenizerSpecialTokens {
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  std::optional<int32_t> pad_id;
  std::string bos_token;  // text of bos, "" when none
  std::string eos_token;  // text of eos, "" when none
  bool add_bos_token = false;  // prepend bos when encoding with special tokens
  bool add_eos_token = false;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads the tokenizer of a checkpoint folder (see the header comment).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(
      absl::string_view model_dir);

  // Encodes text. `text` must be valid UTF-8 (else INVALID_ARGUMENT naming
  // the byte offset). Added/special tokens written literally in the text are
  // matched as those tokens, as Hugging Face does. With
  // add_special_tokens, the post-processor / add_bos_token of the
  // checkpoint applies (e.g. Llama's leading <s>).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(
      absl::string_view text, bool add_special_tokens) const = 0;

  // Decodes ids to text; ids outside the vocabulary are INVALID_ARGUMENT
  // naming the position. With skip_special_tokens, special added tokens are
  // left out. Invalid UTF-8 produced by byte tokens becomes U+FFFD, as
  // Hugging Face's decode does.
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                             bool skip_special_tokens) const = 0;

  // Number of ids (the model vocabulary plus added tokens).
  virtual int32_t vocab_size() const = 0;
  // Id of a token's text (vocabulary or added token), if any.
  virtual std::optional<int32_t> TokenToId(absl::string_view token) const = 0;
  // The token's stored text (not decoded), "" for an id out of range.
  virtual std::string IdToToken(int32_t id) const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;

  virtual const TokenizerSpecialTokens& special_tokens() const = 0;
  // chat_template of tokenizer_config.json, "" when there is none.
  virtual const std::string& chat_template() const = 0;
};

// Incremental detokenisation for streaming. Push ids as they are generated;
// each call returns the new text that is now final: always valid UTF-8, never
// half a character, and the concatenation of all returned chunks plus
// Finish() equals Decode(all ids) (the prefix-offset method: decode a window
// of recent ids, emit only the part past what was emitted, hold back while it
// ends in an incomplete character).
class StreamingDetokenizer {
 public:
  StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                       std::vector<int32_t> prompt_ids = {});
  absl::StatusOr<std::string> Push(int32_t id);
  // Text still held back (an incomplete character at the end becomes U+FFFD).
  absl::StatusOr<std::string> Finish();

 private:
  // The decoding of ids_[prefix_offset_, read_offset_) (what was sent of
  // the window) and of ids_[prefix_offset_, end).
  struct Window {
    std::string prefix;
    std::string text;
  };
  absl::StatusOr<Window> DecodeWindow() const;

  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
};

}  // namespace moe

#endif  // MOE_CORE_TEXT_TOKENIZER_H_
