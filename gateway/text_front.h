// The gateway's text layer: the checkpoint's tokenizer and chat template.
//
// ResolvePrompt turns a public GenerateRequest's text (`prompt`, or
// `messages` rendered with the chat template) into prompt_ids, so that
// everything past the gateway sees token ids only; NewTextDecoder gives
// the public stream its incremental text.
//
// Thread-safety: immutable after Load; every method may be called from any
// thread.
#ifndef MOE_GATEWAY_TEXT_FRONT_H_
#define MOE_GATEWAY_TEXT_FRONT_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/rpc/token_stream_writer.h"
#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"
#include "moe/v1/generate.pb.h"

namespace moe {

class TextFront {
 public:
  // A checkpoint folder without tokenizer.json or tokenizer.model gives a
  // front without text (requests must carry prompt_ids); a tokenizer or
  // chat template that is present but broken is an error naming the file.
  static absl::StatusOr<std::unique_ptr<TextFront>> Load(
      absl::string_view model_dir);

  // Exactly one of prompt_ids, prompt and messages must be set
  // (INVALID_ARGUMENT naming them). Text is encoded into prompt_ids and
  // the text fields cleared. Text without a tokenizer, or messages without
  // a chat template, is FAILED_PRECONDITION; a template that rejects the
  // conversation (raise_exception) is INVALID_ARGUMENT naming `messages`.
  absl::Status ResolvePrompt(v1::GenerateRequest& request) const;

  // A decoder for one stream (null without a tokenizer). Ids outside the
  // tokenizer (a model vocabulary padded past it) contribute no text.
  std::unique_ptr<TokenTextDecoder> NewTextDecoder(
      bool skip_special_tokens) const;

  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  // The tokenizer (null without one), shared with the OpenAI HTTP API's
  // logprobs.
  std::shared_ptr<const Tokenizer> tokenizer() const { return tokenizer_; }
  bool has_chat_template() const { return chat_template_.has_value(); }

 private:
  TextFront() = default;
  absl::StatusOr<std::string> RenderMessages(
      const v1::GenerateRequest& request) const;

  std::shared_ptr<const Tokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_template_;
};

}  // namespace moe

#endif  // MOE_GATEWAY_TEXT_FRONT_H_
