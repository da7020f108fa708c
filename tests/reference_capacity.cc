#include "tests/reference_capacity.h"

#include <algorithm>
#include <cmath>

#include "core/cpu/kernels.h"
#include "core/expert_ffn.h"

namespace moe::testing {

ReferenceCapacityMoe::ReferenceCapacityMoe(const ModelWeights* weights,
                                           double capacity_factor, bool drop)
    : weights_(weights), capacity_factor_(capacity_factor), drop_(drop) {}

absl::Status ReferenceCapacityMoe::RunMoe(int layer, const float* x,
                                          int64_t tokens, float* out) {
  const ModelConfig& c = weights_->config;
  const LayerWeights& lw = weights_->layers[layer];
  const int e = c.num_experts, k = c.num_experts_per_tok;
  const int64_t h = c.hidden_size;
  const bool renormalise =
      c.norm_topk_prob || c.family == ModelFamily::kMixtral;

  // Gate probabilities of every token, and each token's experts ranked by
  // probability (ties: lower id).
  std::vector<float> probs(tokens * e);
  cpu::MatMul(x, tokens, lw.router_gate, probs.data(), nullptr);
  std::vector<std::vector<int>> ranked(tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    float* p = probs.data() + t * e;
    cpu::Softmax(p, e);
    for (int i = 0; i < e; ++i) ranked[t].push_back(i);
    std::stable_sort(ranked[t].begin(), ranked[t].end(),
                     [&](int a, int b) { return p[a] > p[b]; });
  }
  // Slot weights: the top-k probabilities, renormalised where the family
  // does.
  std::vector<float> weight(tokens * k);
  for (int64_t t = 0; t < tokens; ++t) {
    float sum = 0;
    for (int j = 0; j < k; ++j) sum += probs[t * e + ranked[t][j]];
    for (int j = 0; j < k; ++j) {
      const float pj = probs[t * e + ranked[t][j]];
      weight[t * k + j] = renormalise ? pj / sum : pj;
    }
  }

  // Capacity: ceil(factor * tokens * k / experts), written out in decimal
  // terms (a product within 1e-9 of an integer is that integer).
  int64_t capacity = tokens;
  if (capacity_factor_ > 0) {
    const double exact = capacity_factor_ * tokens * k / e;
    capacity = std::min<int64_t>(tokens,
                                 static_cast<int64_t>(std::ceil(exact - 1e-9)));
  }

  // Slot-major: every token's first choice, then every second choice, ...
  std::vector<int64_t> used(e, 0);
  std::vector<int> computed_by(tokens * k, -1);
  for (int j = 0; j < k; ++j) {
    for (int64_t t = 0; t < tokens; ++t) {
      const int gated = ranked[t][j];
      if (used[gated] < capacity) {
        ++used[gated];
        computed_by[t * k + j] = gated;
        ++counts_[{layer, gated}].tokens;
        continue;
      }
      ++counts_[{layer, gated}].overflowed;
      int target = -1;
      if (!drop_) {
        for (int candidate : ranked[t]) {
          bool taken = false;
          for (int i = 0; i < k; ++i) {
            if (ranked[t][i] == candidate || computed_by[t * k + i] == candidate) {
              taken = true;
            }
          }
          if (!taken && used[candidate] < capacity) {
            target = candidate;
            break;
          }
        }
      }
      if (target < 0) {
        ++counts_[{layer, gated}].dropped;
        continue;
      }
      ++used[target];
      computed_by[t * k + j] = target;
      ++counts_[{layer, gated}].rerouted;
      ++counts_[{layer, target}].tokens;
    }
  }

  // Output: each token adds weight * FFN of the expert computing each slot,
  // in ascending expert order; dropped slots add nothing.
  std::fill(out, out + tokens * h, 0.0f);
  std::vector<float> y(h);
  GroupedFfnRunner ffn;
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<std::pair<int, float>> parts;
    for (int j = 0; j < k; ++j) {
      if (computed_by[t * k + j] >= 0) {
        parts.emplace_back(computed_by[t * k + j], weight[t * k + j]);
      }
    }
    std::sort(parts.begin(), parts.end());
    for (const auto& [expert, w] : parts) {
      const FfnGroup group{&lw.experts.at(expert), x + t * h, 1, y.data()};
      ffn.Run(absl::MakeConstSpan(&group, 1), nullptr);
      float* dst = out + t * h;
      for (int64_t i = 0; i < h; ++i) dst[i] += w * y[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace moe::testing
