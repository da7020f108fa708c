// The public Generate request (moe.v1.GenerateRequest, as the gateway and
// the attention servers receive it) through DecodeGenerateRequest against a
// small Mixtral config (vocabulary 512, context 4096).
#include <cstddef>
#include <cstdint>

#include "core/model_generator.h"
#include "core/rpc/generate_codec.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const moe::ModelConfig config =
      moe::SmallConfig(moe::ModelFamily::kMixtral);
  auto request = moe::fuzz::ParseProto<moe::v1::GenerateRequest>(data, size);
  if (!request) return 0;
  absl::StatusOr<moe::DecodedGenerateRequest> decoded =
      moe::DecodeGenerateRequest(*request, config);
  if (!decoded.ok()) {
    moe::fuzz::Check(decoded.status().code() ==
                         absl::StatusCode::kInvalidArgument,
                     "a bad request is not INVALID_ARGUMENT");
    return 0;
  }
  // What the engine relies on once a request is accepted.
  const moe::GenerationRequest& g = decoded->generation;
  moe::fuzz::Check(!g.prompt.empty() && g.max_tokens >= 1,
                   "accepted an empty prompt or max_tokens < 1");
  moe::fuzz::Check(static_cast<int64_t>(g.prompt.size()) + g.max_tokens <=
                       config.max_position_embeddings,
                   "accepted a request longer than the context");
  for (int32_t token : g.prompt) {
    moe::fuzz::Check(token >= 0 && token < config.vocab_size,
                     "accepted a prompt token outside the vocabulary");
  }
  return 0;
}
