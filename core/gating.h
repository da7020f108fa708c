// Top-k expert gating with each family's rule.
#ifndef MOE_CORE_GATING_H_
#define MOE_CORE_GATING_H_

#include <cstdint>
#include <vector>

#include "core/model_config.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace moe {

// Routing of a batch: for token t, slot j < k: expert id and weight.
struct Routing {
  int64_t tokens = 0;
  int k = 0;
  std::vector<int32_t> experts;  // [tokens, k], descending probability
  std::vector<float> weights;    // [tokens, k]
};

// From router logits [tokens, num_experts]: softmax over all experts in
// float32, top-k (ties: lower id first), and, when the family renormalises
// (Mixtral always; others when norm_topk_prob), division by the top-k sum.
Routing RouteFromLogits(const ModelConfig& config, const float* logits,
                        int64_t tokens);

// Whether the top-k weights are divided by their sum (Mixtral always;
// others when norm_topk_prob).
bool TopKIsRenormalised(const ModelConfig& config);

// Logits = x [tokens, hidden] · gate^T, then RouteFromLogits.
Routing ComputeRouting(const ModelConfig& config, const TensorView& gate,
                       const float* x, int64_t tokens, ThreadPool* pool);

}  // namespace moe

#endif  // MOE_CORE_GATING_H_
