#include "core/gating.h"

#include <algorithm>
#include <numeric>

#include "core/cpu/kernels.h"

namespace moe {
namespace {

// Per-token scratch and rule of one routing call.
class TokenRouter {
 public:
  TokenRouter(const ModelConfig& config,
              absl::Span<const float> correction_bias)
      : c_(config),
        bias_(correction_bias),
        scores_(config.num_experts),
        choice_(config.num_experts),
        order_(config.num_experts) {}

  // Fills scores_ (what weights come from) and choice_ (what experts are
  // chosen by) from one token's logits.
  void Score(const float* logits) {
    const int e = c_.num_experts;
    std::copy(logits, logits + e, scores_.begin());
    if (c_.scoring_func == ScoringFunc::kSigmoid) {
      for (float& s : scores_) s = cpu::Sigmoid(s);
    } else {
      cpu::Softmax(scores_.data(), e);
    }
    choice_ = scores_;
    if (c_.topk_method == TopkMethod::kNoauxTc && !bias_.empty()) {
      for (int x = 0; x < e; ++x) choice_[x] += bias_[x];
    }
    if (c_.topk_method != TopkMethod::kGreedy) MaskGroups();
  }

  // order_ sorted by choice (ties -> lower id); the first `n` at least.
  void Rank(int n) {
    std::iota(order_.begin(), order_.end(), 0);
    auto better = [&](int32_t a, int32_t b) {
      return choice_[a] > choice_[b] || (choice_[a] == choice_[b] && a < b);
    };
    if (n >= c_.num_experts) {
      std::sort(order_.begin(), order_.end(), better);
    } else {
      std::partial_sort(order_.begin(), order_.begin() + n, order_.end(),
                        better);
    }
  }

  // Weights of the first k ranked experts.
  void Weights(int k, float* out) const {
    for (int j = 0; j < k; ++j) out[j] = scores_[order_[j]];
    if (!c_.is_deepseek()) {
      if (!TopKIsRenormalised(c_)) return;
      float sum = 0;
      for (int j = 0; j < k; ++j) sum += out[j];
      for (int j = 0; j < k; ++j) out[j] /= sum;
      return;
    }
    const bool renormalise = c_.norm_topk_prob && k > 1;
    if (renormalise) {
      float sum = 0;
      for (int j = 0; j < k; ++j) sum += out[j];
      sum += 1e-20f;
      for (int j = 0; j < k; ++j) out[j] /= sum;
    }
    const bool scale =
        c_.family == ModelFamily::kDeepseekV3 || !renormalise;
    if (scale) {
      const float f = static_cast<float>(c_.routed_scaling_factor);
      for (int j = 0; j < k; ++j) out[j] *= f;
    }
  }

  const std::vector<int32_t>& order() const { return order_; }

 private:
  // Zeroes the choice score of every expert outside the topk_group best
  // groups.
  void MaskGroups() {
    const int groups = c_.n_group;
    const int per = c_.num_experts / groups;
    group_score_.assign(groups, 0);
    for (int g = 0; g < groups; ++g) {
      const float* s = choice_.data() + g * per;
      if (c_.topk_method == TopkMethod::kGroupLimitedGreedy) {
        group_score_[g] = *std::max_element(s, s + per);
      } else {  // noaux_tc: the sum of the group's two best
        float best = s[0], second = s[1];
        if (second > best) std::swap(best, second);
        for (int i = 2; i < per; ++i) {
          if (s[i] > best) {
            second = best;
            best = s[i];
          } else if (s[i] > second) {
            second = s[i];
          }
        }
        group_score_[g] = best + second;
      }
    }
    group_order_.resize(groups);
    std::iota(group_order_.begin(), group_order_.end(), 0);
    std::sort(group_order_.begin(), group_order_.end(), [&](int a, int b) {
      return group_score_[a] > group_score_[b] ||
             (group_score_[a] == group_score_[b] && a < b);
    });
    for (int r = c_.topk_group; r < groups; ++r) {
      float* s = choice_.data() + group_order_[r] * per;
      std::fill(s, s + per, 0.0f);
    }
  }

  const ModelConfig& c_;
  absl::Span<const float> bias_;
  std::vector<float> scores_, choice_, group_score_;
  std::vector<int32_t> order_;
  std::vector<int> group_order_;
};

}  // namespace

bool TopKIsRenormalised(const ModelConfig& config) {
  // Mixtral renormalises whatever the flag says (the parser also sets it).
  return config.norm_topk_prob || config.family == ModelFamily::kMixtral;
}

Routing RouteFromLogits(const ModelConfig& config, const float* logits,
                        int64_t tokens,
                        absl::Span<const float> correction_bias) {
  const int e = config.num_experts;
  const int k = config.num_experts_per_tok;
  Routing r;
  r.tokens = tokens;
  r.k = k;
  r.experts.resize(tokens * k);
  r.weights.resize(tokens * k);
  TokenRouter router(config, correction_bias);
  for (int64_t t = 0; t < tokens; ++t) {
    router.Score(logits + t * e);
    router.Rank(k);
    std::copy(router.order().begin(), router.order().begin() + k,
              r.experts.begin() + t * k);
    router.Weights(k, r.weights.data() + t * k);
  }
  return r;
}

std::vector<int32_t> RankExperts(const ModelConfig& config,
                                 const float* token_logits,
                                 absl::Span<const float> correction_bias) {
  TokenRouter router(config, correction_bias);
  router.Score(token_logits);
  router.Rank(config.num_experts);
  return router.order();
}

Routing ComputeRouting(const ModelConfig& config, const TensorView& gate,
                       absl::Span<const float> correction_bias, const float* x,
                       int64_t tokens, ThreadPool* pool) {
  std::vector<float> logits(tokens * config.num_experts);
  cpu::MatMul(x, tokens, gate, logits.data(), pool);
  return RouteFromLogits(config, logits.data(), tokens, correction_bias);
}

}  // namespace moe
