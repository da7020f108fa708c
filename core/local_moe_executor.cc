#include "core/local_moe_executor.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"

namespace moe {

std::vector<ExpertAssignment> GroupByExpert(const Routing& routing) {
  std::map<int32_t, ExpertAssignment> by_expert;
  for (int64_t t = 0; t < routing.tokens; ++t) {
    for (int j = 0; j < routing.k; ++j) {
      const int32_t e = routing.experts[t * routing.k + j];
      ExpertAssignment& a = by_expert[e];
      a.expert = e;
      a.tokens.push_back(static_cast<int32_t>(t));
      a.weights.push_back(routing.weights[t * routing.k + j]);
    }
  }
  std::vector<ExpertAssignment> out;
  out.reserve(by_expert.size());
  for (auto& [e, a] : by_expert) out.push_back(std::move(a));
  return out;
}

LocalMoeExecutor::LocalMoeExecutor(const ModelWeights* weights,
                                   ThreadPool* pool)
    : weights_(weights), pool_(pool) {}

absl::Status LocalMoeExecutor::RunMoe(int layer, const float* x,
                                      int64_t tokens, float* out) {
  const LayerWeights& lw = weights_->layers[layer];
  const int64_t h = weights_->config.hidden_size;
  const Routing routing =
      ComputeRouting(weights_->config, lw.router_gate,
                     lw.router_correction_bias, x, tokens, pool_);
  if (observer_) observer_(layer, routing);
  const std::vector<ExpertAssignment> assignments = GroupByExpert(routing);

  int64_t rows = 0;
  for (const ExpertAssignment& a : assignments) rows += a.tokens.size();
  gathered_.resize(rows * h);
  results_.resize(rows * h);
  std::vector<FfnGroup> groups;
  groups.reserve(assignments.size());
  int64_t row = 0;
  for (const ExpertAssignment& a : assignments) {
    auto it = lw.experts.find(a.expert);
    if (it == lw.experts.end()) {
      return absl::InternalError(absl::StrCat("expert ", a.expert, " of layer ",
                                              layer, " is not loaded"));
    }
    for (size_t i = 0; i < a.tokens.size(); ++i) {
      std::copy(x + a.tokens[i] * h, x + (a.tokens[i] + 1) * h,
                gathered_.data() + (row + i) * h);
    }
    groups.push_back({&it->second, gathered_.data() + row * h,
                      static_cast<int64_t>(a.tokens.size()),
                      results_.data() + row * h});
    row += a.tokens.size();
  }
  runner_.Run(groups, pool_);

  // Weighted combine in ascending expert order (deterministic for a routing).
  std::fill(out, out + tokens * h, 0.0f);
  row = 0;
  for (const ExpertAssignment& a : assignments) {
    for (size_t i = 0; i < a.tokens.size(); ++i) {
      float* dst = out + a.tokens[i] * h;
      const float* src = results_.data() + (row + i) * h;
      const float w = a.weights[i];
      for (int64_t j = 0; j < h; ++j) dst[j] += w * src[j];
    }
    row += a.tokens.size();
  }
  return absl::OkStatus();
}

}  // namespace moe
