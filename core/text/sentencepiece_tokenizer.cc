#include "core/text/sentencepiece_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "core/text/hf_tokenizer.h"
#include "core/text/spm_backend.h"
#include "core/text/utf8.h"

namespace moe::text {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(
      absl::string_view text, bool add_special_tokens) const override {
    if (std::optional<size_t> bad = FirstInvalidUtf8(text)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte ", *bad));
    }
    const std::vector<int> pieces = processor_->Encode(text);
    std::vector<int32_t> ids(pieces.begin(), pieces.end());
    if (add_special_tokens && config_.special.add_bos_token) {
      ids.insert(ids.begin(), *config_.special.bos_id);
    }
    if (add_special_tokens && config_.special.add_eos_token) {
      ids.push_back(*config_.special.eos_id);
    }
    return ids;
  }
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens) const override {
    std::vector<int> pieces;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "ids[", i, "]: token id ", ids[i], " is outside the vocabulary [0, ",
            vocab_size(), ")"));
      }
      if (skip_special_tokens && IsSpecial(ids[i])) continue;
      pieces.push_back(ids[i]);
    }
    absl::StatusOr<std::string> text = processor_->Decode(pieces);
    if (!text.ok()) return text.status();
    return LossyUtf8(*text);
  }
  int32_t vocab_size() const override { return processor_->size(); }
  std::optional<int32_t> TokenToId(absl::string_view token) const override {
    const int id = processor_->PieceToId(token);
    if (id == processor_->unk_id() && processor_->IdToPiece(id) != token) {
      return std::nullopt;
    }
    return id;
  }
  std::string IdToToken(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? processor_->IdToPiece(id) : "";
  }
  bool IsSpecial(int32_t id) const override {
    return processor_->IsControlOrUnknown(id);
  }
  const TokenizerSpecialTokens& special_tokens() const override {
    return config_.special;
  }
  const std::string& chat_template() const override {
    return config_.chat_template;
  }

  std::unique_ptr<SpmBackend> processor_;
  TokenizerConfig config_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeSentencePieceTokenizer(
    const std::string& model_path, const nlohmann::json& config) {
  auto t = std::make_unique<SentencePieceTokenizer>();
  absl::StatusOr<std::unique_ptr<SpmBackend>> processor = SpmBackend::Load(model_path);
  if (!processor.ok()) return processor.status();  // names model_path
  t->processor_ = *std::move(processor);
  SentencePieceTokenizer* raw = t.get();
  absl::StatusOr<TokenizerConfig> parsed = ParseTokenizerConfig(
      config, [raw](const std::string& s) { return raw->TokenToId(s); });
  if (!parsed.ok()) return parsed.status();
  t->config_ = *std::move(parsed);
  if (config.is_null()) {
    const int bos = t->processor_->bos_id(), eos = t->processor_->eos_id();
    if (bos >= 0) {
      t->config_.special.bos_id = bos;
      t->config_.special.bos_token = t->processor_->IdToPiece(bos);
      t->config_.special.add_bos_token = true;
    }
    if (eos >= 0) {
      t->config_.special.eos_id = eos;
      t->config_.special.eos_token = t->processor_->IdToPiece(eos);
    }
  }
  return t;
}

}  // namespace moe::text
