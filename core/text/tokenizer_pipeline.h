// The stages of a Hugging Face `tokenizer.json` pipeline, each built from
// its JSON object (parse errors name the JSON path given as `where`):
//   normalizer -> pre-tokenizer -> model (BPE) -> post-processor
//   and, back, the decoder.
// Every stage is immutable after construction and thread-safe.
#ifndef MOE_CORE_TEXT_TOKENIZER_PIPELINE_H_
#define MOE_CORE_TEXT_TOKENIZER_PIPELINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace moe::text {

class Regex;
// A Replace/Split "pattern": {"String": s} or {"Regex": r}.
absl::StatusOr<std::shared_ptr<const Regex>> MakePattern(
    const nlohmann::json& json, const std::string& where);
// The stages listed under json[key] of a "Sequence" stage, each built with
// make(item, "where.key[i]"); null stages (a JSON null) are left out.
// INVALID_ARGUMENT naming "where.key" when it is not a list, or the first
// stage's own error.
template <typename Stage, typename Make>
absl::StatusOr<std::vector<std::unique_ptr<Stage>>> MakeStageList(
    const nlohmann::json& json, const std::string& where, const char* key,
    Make make) {
  const auto it = json.find(key);
  if (it == json.end() || !it->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, ": expected a list"));
  }
  std::vector<std::unique_ptr<Stage>> parts;
  for (size_t i = 0; i < it->size(); ++i) {
    absl::StatusOr<std::unique_ptr<Stage>> part =
        make((*it)[i], absl::StrCat(where, ".", key, "[", i, "]"));
    if (!part.ok()) return part.status();
    if (*part != nullptr) parts.push_back(*std::move(part));
  }
  return parts;
}

// json[key] when it is a string, else `fallback`.
std::string StringField(const nlohmann::json& json, const char* key,
                        const std::string& fallback = "");

// json[key] when it is a boolean (BoolField) or an integer in int's range
// (IntField); `fallback` when absent or null; INVALID_ARGUMENT naming
// "<where>.<key>" when it holds anything else.
absl::StatusOr<bool> BoolField(const nlohmann::json& json, const char* key,
                               bool fallback, const std::string& where);
absl::StatusOr<int> IntField(const nlohmann::json& json, const char* key,
                             int fallback, const std::string& where);

// text -> normalized text.
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Normalize(std::string text) const = 0;
};
// A null JSON value gives nullptr (no normalizer).
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(
    const nlohmann::json& json, const std::string& where);

// Splits text into the pieces the model encodes one by one.
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // `first`: the piece is the first section of the input (Metaspace's
  // prepend_scheme "first").
  virtual void Split(std::vector<std::string>& pieces, bool first) const = 0;
};
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(
    const nlohmann::json& json, const std::string& where);

// Token strings -> text. A token that is an added token is marked so that
// byte-level decoding leaves it as written.
struct DecodedToken {
  std::string text;
  bool added = false;
};
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void Decode(std::vector<DecodedToken>& tokens) const = 0;
};
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& json,
                                                     const std::string& where);

// Adds the special tokens of a single sequence (add_special_tokens).
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual std::vector<int32_t> Process(std::vector<int32_t> ids) const = 0;
  // Whether it adds anything (a ByteLevel post-processor does not).
  virtual bool AddsTokens() const = 0;
};
// `token_id` resolves a token's text to its id (for TemplateProcessing
// special tokens given by text).
absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(
    const nlohmann::json& json, const std::string& where,
    const std::function<std::optional<int32_t>(const std::string&)>& token_id);

// GPT-2's byte -> printable code point table (ByteLevel).
const std::vector<uint32_t>& ByteToUnicode();
// Its inverse over code points (-1 for a code point no byte maps to).
int ByteOfCodePoint(uint32_t cp);
// The text of `bytes` with every byte mapped through ByteToUnicode.
std::string BytesToUnicodeText(absl::string_view bytes);

}  // namespace moe::text

#endif  // MOE_CORE_TEXT_TOKENIZER_PIPELINE_H_
