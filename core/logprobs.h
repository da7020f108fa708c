// Log-probabilities of a sampled token under the model's distribution.
#ifndef MOE_CORE_LOGPROBS_H_
#define MOE_CORE_LOGPROBS_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/types/span.h"

namespace moe {

struct TokenLogprobs {
  int32_t token = 0;
  float logprob = 0;
  // The `top` most likely tokens, descending (ties: lower id first).
  std::vector<std::pair<int32_t, float>> top;
};

// log_softmax of the raw logits (before repetition penalty, temperature,
// top-k or top-p, as vLLM reports by default), evaluated for `token` and the
// `top` most likely tokens (clamped to the vocabulary size).
TokenLogprobs ComputeLogprobs(absl::Span<const float> logits, int32_t token,
                              int top);

}  // namespace moe

#endif  // MOE_CORE_LOGPROBS_H_
