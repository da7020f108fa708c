#include "core/text/hf_tokenizer.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/text/bpe_model.h"
#include "core/text/tokenizer_pipeline.h"
#include "core/text/utf8.h"

namespace moe::text {
namespace {

struct AddedToken {
  int32_t id;
  std::string content;
  bool special;
  bool lstrip, rstrip, single_word;
};

bool IsWordByte(unsigned char c) {
  return c >= 0x80 || std::isalnum(c) || c == '_';
}

// The input split into added tokens and the text between them.
struct Section {
  absl::string_view text;
  int32_t added_id = -1;  // >= 0: this section is that added token
};

class HfTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Make(
      const nlohmann::json& json, const nlohmann::json& config);

  absl::StatusOr<std::vector<int32_t>> Encode(
      absl::string_view text, bool add_special_tokens) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> TokenToId(absl::string_view token) const override;
  std::string IdToToken(int32_t id) const override;
  bool IsSpecial(int32_t id) const override {
    const auto it = added_by_id_.find(id);
    return it != added_by_id_.end() && added_[it->second].special;
  }
  const TokenizerSpecialTokens& special_tokens() const override {
    return config_.special;
  }
  const std::string& chat_template() const override {
    return config_.chat_template;
  }

 private:
  std::vector<Section> SplitOnAddedTokens(absl::string_view text) const;

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  std::vector<AddedToken> added_;
  absl::flat_hash_map<int32_t, size_t> added_by_id_;
  absl::flat_hash_map<std::string, size_t> added_by_content_;
  // First byte -> added tokens starting with it, longest first.
  std::vector<std::vector<size_t>> added_by_first_byte_{256};
  TokenizerConfig config_;
  int32_t vocab_size_ = 0;
};

absl::StatusOr<std::unique_ptr<Tokenizer>> HfTokenizer::Make(
    const nlohmann::json& json, const nlohmann::json& config) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: expected an object");
  }
  auto prefixed = [](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("tokenizer.json: ", s.message()));
  };
  std::unique_ptr<HfTokenizer> t(new HfTokenizer());
  if (!json.contains("model")) {
    return absl::InvalidArgumentError("tokenizer.json: model: missing");
  }
  absl::StatusOr<std::unique_ptr<BpeModel>> model = BpeModel::Parse(json["model"]);
  if (!model.ok()) return prefixed(model.status());
  t->model_ = *std::move(model);
  t->vocab_size_ = t->model_->size();

  const nlohmann::json added = json.value("added_tokens", nlohmann::json::array());
  if (!added.is_array()) {
    return absl::InvalidArgumentError("tokenizer.json: added_tokens: expected a list");
  }
  for (size_t i = 0; i < added.size(); ++i) {
    const nlohmann::json& a = added[i];
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
        !a.contains("content") || !a["content"].is_string() ||
        a["id"].get<int64_t>() < 0 || a["id"].get<int64_t>() > (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.json: added_tokens[", i,
          "]: expected {\"id\": 0..2^24, \"content\": \"...\"}"));
    }
    const std::string where = absl::StrCat("tokenizer.json: added_tokens[", i, "]");
    AddedToken token{a["id"].get<int32_t>(), a["content"].get<std::string>()};
    for (const auto& [key, field] :
         {std::pair{"special", &token.special}, std::pair{"lstrip", &token.lstrip},
          std::pair{"rstrip", &token.rstrip},
          std::pair{"single_word", &token.single_word}}) {
      absl::StatusOr<bool> value = BoolField(a, key, false, where);
      if (!value.ok()) return value.status();
      *field = *value;
    }
    if (token.content.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.json: added_tokens[", i, "].content: empty"));
    }
    if (FirstInvalidUtf8(token.content).has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.json: added_tokens[", i, "].content: not UTF-8"));
    }
    t->vocab_size_ = std::max(t->vocab_size_, token.id + 1);
    t->added_by_id_[token.id] = t->added_.size();
    t->added_by_content_[token.content] = t->added_.size();
    t->added_.push_back(std::move(token));
  }
  for (size_t i = 0; i < t->added_.size(); ++i) {
    t->added_by_first_byte_[static_cast<unsigned char>(t->added_[i].content[0])]
        .push_back(i);
  }
  for (std::vector<size_t>& list : t->added_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return t->added_[a].content.size() > t->added_[b].content.size();
    });
  }

  absl::StatusOr<std::unique_ptr<Normalizer>> normalizer =
      MakeNormalizer(json.value("normalizer", nlohmann::json()), "normalizer");
  if (!normalizer.ok()) return prefixed(normalizer.status());
  t->normalizer_ = *std::move(normalizer);
  absl::StatusOr<std::unique_ptr<PreTokenizer>> pre = MakePreTokenizer(
      json.value("pre_tokenizer", nlohmann::json()), "pre_tokenizer");
  if (!pre.ok()) return prefixed(pre.status());
  t->pre_tokenizer_ = *std::move(pre);
  absl::StatusOr<std::unique_ptr<Decoder>> decoder =
      MakeDecoder(json.value("decoder", nlohmann::json()), "decoder");
  if (!decoder.ok()) return prefixed(decoder.status());
  t->decoder_ = *std::move(decoder);
  HfTokenizer* raw = t.get();
  const auto token_id = [raw](const std::string& s) { return raw->TokenToId(s); };
  absl::StatusOr<std::unique_ptr<PostProcessor>> post = MakePostProcessor(
      json.value("post_processor", nlohmann::json()), "post_processor", token_id);
  if (!post.ok()) return prefixed(post.status());
  t->post_processor_ = *std::move(post);
  absl::StatusOr<TokenizerConfig> parsed = ParseTokenizerConfig(config, token_id);
  if (!parsed.ok()) return parsed.status();
  t->config_ = *std::move(parsed);
  return t;
}

std::vector<Section> HfTokenizer::SplitOnAddedTokens(absl::string_view text) const {
  std::vector<Section> sections;
  size_t start = 0;  // of the pending plain text
  size_t i = 0;
  while (i < text.size()) {
    const AddedToken* found = nullptr;
    for (size_t index : added_by_first_byte_[static_cast<unsigned char>(text[i])]) {
      const AddedToken& token = added_[index];
      if (text.compare(i, token.content.size(), token.content) != 0) continue;
      if (token.single_word &&
          ((i > 0 && IsWordByte(text[i - 1])) ||
           (i + token.content.size() < text.size() &&
            IsWordByte(text[i + token.content.size()])))) {
        continue;
      }
      found = &token;
      break;
    }
    if (found == nullptr) {
      ++i;
      continue;
    }
    size_t begin = i, end = i + found->content.size();
    if (found->lstrip) {
      while (begin > start && std::isspace(static_cast<unsigned char>(text[begin - 1]))) {
        --begin;
      }
    }
    if (found->rstrip) {
      while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end]))) {
        ++end;
      }
    }
    if (begin > start) sections.push_back({text.substr(start, begin - start), -1});
    sections.push_back({text.substr(i, found->content.size()), found->id});
    start = i = end;
  }
  if (start < text.size()) sections.push_back({text.substr(start), -1});
  return sections;
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::Encode(
    absl::string_view text, bool add_special_tokens) const {
  if (std::optional<size_t> bad = FirstInvalidUtf8(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid UTF-8 at byte ", *bad));
  }
  std::vector<int32_t> ids;
  const std::vector<Section> sections = SplitOnAddedTokens(text);
  for (size_t s = 0; s < sections.size(); ++s) {
    if (sections[s].added_id >= 0) {
      ids.push_back(sections[s].added_id);
      continue;
    }
    std::string normalized(sections[s].text);
    if (normalizer_ != nullptr) normalized = normalizer_->Normalize(std::move(normalized));
    std::vector<std::string> pieces = {std::move(normalized)};
    if (pre_tokenizer_ != nullptr) pre_tokenizer_->Split(pieces, s == 0);
    for (const std::string& piece : pieces) model_->Encode(piece, ids);
  }
  if (add_special_tokens) {
    if (post_processor_->AddsTokens()) {
      ids = post_processor_->Process(std::move(ids));
    } else {
      if (config_.special.add_bos_token) ids.insert(ids.begin(), *config_.special.bos_id);
      if (config_.special.add_eos_token) ids.push_back(*config_.special.eos_id);
    }
  }
  return ids;
}

absl::StatusOr<std::string> HfTokenizer::Decode(absl::Span<const int32_t> ids,
                                                bool skip_special_tokens) const {
  std::vector<DecodedToken> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ids[", i, "]: token id ", id, " is outside the vocabulary [0, ",
          vocab_size_, ")"));
    }
    if (const auto it = added_by_id_.find(id); it != added_by_id_.end()) {
      if (skip_special_tokens && added_[it->second].special) continue;
      tokens.push_back({added_[it->second].content, true});
      continue;
    }
    const std::string& token = model_->IdToToken(id);
    if (token.empty()) continue;  // a hole in the vocabulary
    tokens.push_back({token, false});
  }
  std::string text;
  if (decoder_ != nullptr) {
    decoder_->Decode(tokens);
    for (const DecodedToken& t : tokens) text += t.text;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) text += ' ';
      text += tokens[i].text;
    }
  }
  if (config_.clean_up_tokenization_spaces) {
    text = absl::StrReplaceAll(
        text, {{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
               {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"},
               {" 're", "'re"}});
  }
  return LossyUtf8(text);
}

std::optional<int32_t> HfTokenizer::TokenToId(absl::string_view token) const {
  if (const auto it = added_by_content_.find(token); it != added_by_content_.end()) {
    return added_[it->second].id;
  }
  return model_->TokenToId(token);
}

std::string HfTokenizer::IdToToken(int32_t id) const {
  if (const auto it = added_by_id_.find(id); it != added_by_id_.end()) {
    return added_[it->second].content;
  }
  return model_->IdToToken(id);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeHfTokenizer(
    const nlohmann::json& tokenizer_json, const nlohmann::json& config) {
  return HfTokenizer::Make(tokenizer_json, config);
}

}  // namespace moe::text
