// Top-k expert gating with each family's rule.
//
// Softmax families (Mixtral, Qwen2/Qwen3-MoE, OLMoE): softmax over all
// experts in float32, top-k by probability, optionally renormalised.
//
// DeepSeek (DeepSeek's modeling_deepseek.py MoEGate): scores are softmax or
// sigmoid of the logits; the choice uses scores + e_score_correction_bias
// (noaux_tc only); with group limiting (group_limited_greedy, noaux_tc) the
// experts form n_group contiguous groups, the topk_group best groups are
// kept (a group's score is its best choice score for group_limited_greedy,
// the sum of its best two for noaux_tc) and the other experts' choice
// scores become 0; the top-k of those choice scores are chosen. Weights are
// the chosen experts' unbiased scores, divided by (their sum + 1e-20) when
// norm_topk_prob and k > 1, then multiplied by routed_scaling_factor (V3:
// always; V2: only when not renormalised, as V2's remote code does).
//
// Ties, everywhere: the lower expert (or group) id first.
#ifndef MOE_CORE_GATING_H_
#define MOE_CORE_GATING_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/model_config.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace moe {

// Routing of a batch: for token t, slot j < k: expert id and weight.
struct Routing {
  int64_t tokens = 0;
  int k = 0;
  std::vector<int32_t> experts;  // [tokens, k], best choice first
  std::vector<float> weights;    // [tokens, k]
};

// From router logits [tokens, num_experts] with the family's rule.
// `correction_bias` is the layer's e_score_correction_bias (num_experts
// values) for noaux_tc models, empty otherwise.
Routing RouteFromLogits(const ModelConfig& config, const float* logits,
                        int64_t tokens,
                        absl::Span<const float> correction_bias = {});

// Every expert for one token's logits [num_experts], best choice first, by
// the score the family chooses with (ties -> lower id): its first k entries
// are RouteFromLogits's experts for that token, in the same order.
std::vector<int32_t> RankExperts(const ModelConfig& config,
                                 const float* token_logits,
                                 absl::Span<const float> correction_bias = {});

// Whether a softmax family's top-k weights are divided by their sum
// (Mixtral always; others when norm_topk_prob). The CUDA gating kernel
// implements the softmax families only.
bool TopKIsRenormalised(const ModelConfig& config);

// Logits = x [tokens, hidden] · gate^T, then RouteFromLogits.
Routing ComputeRouting(const ModelConfig& config, const TensorView& gate,
                       absl::Span<const float> correction_bias, const float* x,
                       int64_t tokens, ThreadPool* pool);

}  // namespace moe

#endif  // MOE_CORE_GATING_H_
