#include "gateway/text_front.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe {
namespace {

bool HasTokenizerFile(const std::filesystem::path& dir) {
  std::error_code error;
  return std::filesystem::exists(dir / "tokenizer.json", error) ||
         std::filesystem::exists(dir / "tokenizer.model", error);
}

// StreamingDetokenizer behind the writer's interface. Ids the tokenizer
// does not know (a model vocabulary padded past the tokenizer's) are left
// out of the text, as Hugging Face's decode leaves them out.
class StreamingTextDecoder final : public TokenTextDecoder {
 public:
  StreamingTextDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
      : detokenizer_(tokenizer, skip_special_tokens),
        vocab_size_(tokenizer.vocab_size()) {}

  std::string Push(absl::Span<const int32_t> ids) override {
    std::string text;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size_) continue;
      absl::StatusOr<std::string> piece = detokenizer_.Push(id);
      if (piece.ok()) text += *piece;
    }
    return text;
  }

  std::string Finish() override {
    absl::StatusOr<std::string> rest = detokenizer_.Finish();
    return rest.ok() ? *std::move(rest) : std::string();
  }

 private:
  StreamingDetokenizer detokenizer_;
  const int32_t vocab_size_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TextFront>> TextFront::Load(
    absl::string_view model_dir) {
  std::unique_ptr<TextFront> front(new TextFront());
  const std::filesystem::path dir{std::string(model_dir)};
  if (!HasTokenizerFile(dir)) return front;
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                   Tokenizer::Load(model_dir));
  front->tokenizer_ = std::move(tokenizer);
  const std::string& source = front->tokenizer_->chat_template();
  if (!source.empty()) {
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(source);
    if (!parsed.ok()) {
      return absl::Status(
          parsed.status().code(),
          absl::StrCat((dir / "tokenizer_config.json").string(), ": ",
                       parsed.status().message()));
    }
    front->chat_template_ = *std::move(parsed);
  }
  return front;
}

absl::StatusOr<std::string> TextFront::RenderMessages(
    const v1::GenerateRequest& request) const {
  if (!chat_template_.has_value()) {
    return absl::FailedPreconditionError(
        "messages: this model has no chat_template in its "
        "tokenizer_config.json; send a text prompt instead");
  }
  ChatTemplateInputs inputs;
  inputs.add_generation_prompt = true;
  const TokenizerSpecialTokens& special = tokenizer_->special_tokens();
  inputs.bos_token = special.bos_token;
  inputs.eos_token = special.eos_token;
  for (int i = 0; i < request.messages_size(); ++i) {
    const v1::ChatMessage& m = request.messages(i);
    if (m.role() != "system" && m.role() != "user" &&
        m.role() != "assistant") {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i, "].role: must be system, user or "
                       "assistant, got \"", m.role(), "\""));
    }
    inputs.messages.push_back(ChatMessage{m.role(), m.content()});
  }
  absl::StatusOr<std::string> rendered = chat_template_->Render(inputs);
  if (!rendered.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages: the chat template refused them: ",
                     rendered.status().message()));
  }
  return rendered;
}

absl::Status TextFront::ResolvePrompt(v1::GenerateRequest& request) const {
  const int given = (request.prompt_ids_size() > 0 ? 1 : 0) +
                    (request.prompt().empty() ? 0 : 1) +
                    (request.messages_size() > 0 ? 1 : 0);
  if (given > 1) {
    return absl::InvalidArgumentError(
        "prompt_ids, prompt, messages: exactly one may be set");
  }
  if (request.prompt().empty() && request.messages_size() == 0) {
    return absl::OkStatus();  // ids, or nothing (named by validation)
  }
  const char* field = request.messages_size() > 0 ? "messages" : "prompt";
  if (tokenizer_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        field, ": this model has no tokenizer (no tokenizer.json or "
               "tokenizer.model in its folder); send prompt_ids"));
  }
  std::string text;
  // A chat template writes the special tokens (BOS included) itself.
  bool add_special_tokens = true;
  if (request.messages_size() > 0) {
    ASSIGN_OR_RETURN(text, RenderMessages(request));
    add_special_tokens = false;
  } else {
    text = request.prompt();
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      tokenizer_->Encode(text, add_special_tokens);
  if (!ids.ok()) {
    return absl::Status(ids.status().code(),
                        absl::StrCat(field, ": ", ids.status().message()));
  }
  request.clear_prompt();
  request.clear_messages();
  for (int32_t id : *ids) request.add_prompt_ids(id);
  return absl::OkStatus();
}

std::unique_ptr<TokenTextDecoder> TextFront::NewTextDecoder(
    bool skip_special_tokens) const {
  if (tokenizer_ == nullptr) return nullptr;
  return std::make_unique<StreamingTextDecoder>(*tokenizer_,
                                                skip_special_tokens);
}

}  // namespace moe
