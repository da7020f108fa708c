// OpenAI request bodies (POST /v1/completions, /v1/chat/completions) turned
// into a moe.v1 GenerateRequest, plus what the HTTP layer itself does with
// them (streaming, stop strings, which extras to return).
//
// Unknown fields are ignored, as OpenAI's API does. Every error is
// INVALID_ARGUMENT (NOT_FOUND for an unknown model) whose message starts
// with the OpenAI field it is about, "FIELD: ..." (e.g. "max_tokens: must be
// an integer >= 1"), except body-level errors (malformed JSON, not an object,
// invalid UTF-8), which start with "request body".
#ifndef MOE_GATEWAY_HTTP_OPENAI_REQUEST_H_
#define MOE_GATEWAY_HTTP_OPENAI_REQUEST_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "moe/v1/generate.pb.h"

namespace moe {

enum class OpenAiEndpoint { kCompletions, kChatCompletions };

// OpenAI's default max_tokens for completions; chat requests without one
// get kDefaultChatMaxTokens (capped by the gateway's context check).
inline constexpr int kDefaultCompletionMaxTokens = 16;
inline constexpr int kDefaultChatMaxTokens = 1024;
inline constexpr int kMaxStopStrings = 16;

struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  // prompt or messages, max_tokens, sampling, logprobs, ignore_eos,
  // stop_token_ids. request_id is left to the caller.
  v1::GenerateRequest generate;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::vector<std::string> stop;
  // Whether choices carry logprobs, and how many alternatives each token
  // shows (chat top_logprobs, completions logprobs).
  bool logprobs = false;
  int top_logprobs = 0;
  bool return_token_ids = false;  // vLLM's extension: choices[].token_ids
  // The name the client gave max_tokens ("max_tokens" or
  // "max_completion_tokens"), for errors; whether it gave one at all.
  std::string max_tokens_field = "max_tokens";
  bool max_tokens_given = false;
};

// Parses and validates `body`. `served_model` is the one model this server
// has: a different `model` is NOT_FOUND naming it; an absent one is that
// model.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint,
                                                 absl::string_view body,
                                                 absl::string_view served_model);

}  // namespace moe

#endif  // MOE_GATEWAY_HTTP_OPENAI_REQUEST_H_
