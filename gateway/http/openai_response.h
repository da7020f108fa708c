// OpenAI response bodies: errors in OpenAI's shape, completions and chat
// completions (whole, or as the JSON of Server-Sent Event chunks), models.
//
// Every function returns serialised JSON; invalid UTF-8 (which the service
// never sends) would be replaced, never thrown on. Thread-compatible: a
// formatter belongs to one request.
#ifndef MOE_GATEWAY_HTTP_OPENAI_RESPONSE_H_
#define MOE_GATEWAY_HTTP_OPENAI_RESPONSE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/text/tokenizer.h"
#include "gateway/http/openai_request.h"
#include "moe/v1/generate.pb.h"
#include "nlohmann/json.hpp"

namespace moe {

// An error as OpenAI returns it:
// {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct OpenAiError {
  int http_status = 500;
  std::string message;
  std::string type;   // e.g. "invalid_request_error"
  std::string param;  // the field at fault; "" = null
  std::string code;   // "" = null
};

std::string OpenAiErrorBody(const OpenAiError& error);

// An error with the given status and message; the type follows the status.
OpenAiError MakeOpenAiError(int http_status, std::string message,
                            std::string param = "", std::string code = "");

// The error for a failed request: the HTTP status follows the code
// (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE -> 400, NOT_FOUND ->
// 404, UNAUTHENTICATED -> 401, RESOURCE_EXHAUSTED -> 429, UNAVAILABLE ->
// 503, DEADLINE_EXCEEDED -> 504, else 500). The param is the field a
// message starts with ("FIELD: ..."), the gateway's proto names mapped to
// the OpenAI ones of `request` (prompt_ids -> prompt or messages,
// sampling.top_p -> top_p, logprobs -> top_logprobs in chat, ...).
// `request` may be null (the body was not parsed).
OpenAiError OpenAiErrorFromStatus(const absl::Status& status,
                                  const OpenAiRequest* request);

// Usage as OpenAI reports it, prompt_tokens_details.cached_tokens included.
struct OpenAiUsage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;
};

// One choice's worth of output: a chunk's, or a whole response's.
struct ChoiceOutput {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<v1::TokenLogprobs> logprobs;
  std::optional<std::string> finish_reason;  // "stop" or "length"
};

// Formats one request's responses.
class OpenAiFormatter {
 public:
  // `tokenizer` (may be null: tokens are then shown as "token_id:ID") gives
  // the tokens' text in logprobs; it must outlive the formatter.
  OpenAiFormatter(const OpenAiRequest& request, std::string id,
                  int64_t created, std::string model,
                  const Tokenizer* tokenizer);

  const std::string& id() const { return id_; }

  // Streaming: the chat stream's first chunk (the role, no content).
  std::string RoleChunk();
  // Streaming: a chunk with `output` (its finish_reason on the last).
  std::string Chunk(const ChoiceOutput& output);
  // Streaming with include_usage: the last chunk, no choices.
  std::string UsageChunk(const OpenAiUsage& usage);
  // Not streaming: the whole response.
  std::string Whole(const ChoiceOutput& output, const OpenAiUsage& usage);

 private:
  bool chat() const { return endpoint_ == OpenAiEndpoint::kChatCompletions; }
  std::string TokenText(int32_t id) const;
  nlohmann::json Envelope() const;
  nlohmann::json Choice(const ChoiceOutput& output, bool delta);
  nlohmann::json Logprobs(const std::vector<v1::TokenLogprobs>& logprobs);

  OpenAiEndpoint endpoint_;
  bool stream_;
  bool include_usage_;
  bool logprobs_;
  int top_logprobs_;
  bool return_token_ids_;
  std::string id_;
  int64_t created_;
  std::string model_;
  const Tokenizer* tokenizer_;
  int64_t text_offset_ = 0;  // completions logprobs: bytes so far
};

// GET /v1/models and /v1/models/{id}.
std::string ModelListBody(absl::string_view model, int64_t created);
std::string ModelBody(absl::string_view model, int64_t created);

}  // namespace moe

#endif  // MOE_GATEWAY_HTTP_OPENAI_RESPONSE_H_
