#include "core/gating.h"

#include <algorithm>
#include <numeric>

#include "core/cpu/kernels.h"

namespace moe {

bool TopKIsRenormalised(const ModelConfig& config) {
  // Mixtral renormalises whatever the flag says (the parser also sets it).
  return config.norm_topk_prob || config.family == ModelFamily::kMixtral;
}

Routing RouteFromLogits(const ModelConfig& config, const float* logits,
                        int64_t tokens) {
  const int e = config.num_experts;
  const int k = config.num_experts_per_tok;
  Routing r;
  r.tokens = tokens;
  r.k = k;
  r.experts.resize(tokens * k);
  r.weights.resize(tokens * k);
  const bool renormalise = TopKIsRenormalised(config);
  std::vector<float> probs(e);
  std::vector<int32_t> order(e);
  for (int64_t t = 0; t < tokens; ++t) {
    std::copy(logits + t * e, logits + (t + 1) * e, probs.begin());
    cpu::Softmax(probs.data(), e);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t a, int32_t b) {
                        return probs[a] > probs[b] ||
                               (probs[a] == probs[b] && a < b);
                      });
    float sum = 0;
    for (int j = 0; j < k; ++j) sum += probs[order[j]];
    for (int j = 0; j < k; ++j) {
      r.experts[t * k + j] = order[j];
      r.weights[t * k + j] =
          renormalise ? probs[order[j]] / sum : probs[order[j]];
    }
  }
  return r;
}

Routing ComputeRouting(const ModelConfig& config, const TensorView& gate,
                       const float* x, int64_t tokens, ThreadPool* pool) {
  std::vector<float> logits(tokens * config.num_experts);
  cpu::MatMul(x, tokens, gate, logits.data(), pool);
  return RouteFromLogits(config, logits.data(), tokens);
}

}  // namespace moe
