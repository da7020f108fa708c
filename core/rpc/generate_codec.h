// Conversions between the public moe.v1 Generate messages and the engine's
// types, with the validation the gateway and the attention server both
// apply: every error is INVALID_ARGUMENT and names the offending field.
#ifndef MOE_CORE_RPC_GENERATE_CODEC_H_
#define MOE_CORE_RPC_GENERATE_CODEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "core/logprobs.h"
#include "core/model_config.h"
#include "core/sequence_state.h"
#include "moe/v1/generate.pb.h"

namespace moe {

// Limits on fields that the model config does not bound.
inline constexpr int kMaxLogprobs = 20;
inline constexpr int kMaxRequestIdBytes = 256;
inline constexpr int kMaxStopTokenIds = 64;

// A validated request.
struct DecodedGenerateRequest {
  std::string request_id;  // as sent; may be empty
  GenerationRequest generation;
  bool has_seed = false;   // sampling.seed was set
  int logprobs = 0;
};

// Validates `request` against `config`: prompt_ids non-empty and inside the
// vocabulary, max_tokens >= 1 with prompt + max_tokens within the context
// length, sampling.temperature finite and >= 0, sampling.top_k >= 0,
// sampling.top_p in (0, 1], sampling.repetition_penalty finite and > 0,
// stop_token_ids inside the vocabulary (at most kMaxStopTokenIds), logprobs in
// [0, kMaxLogprobs], request_id at most kMaxRequestIdBytes printable ASCII.
absl::StatusOr<DecodedGenerateRequest> DecodeGenerateRequest(
    const v1::GenerateRequest& request, const ModelConfig& config);

v1::FinishReason ToProto(FinishReason reason);

// Appends `logprobs` to a response.
void AppendLogprobs(const TokenLogprobs& logprobs,
                    v1::GenerateResponse* response);

}  // namespace moe

#endif  // MOE_CORE_RPC_GENERATE_CODEC_H_
