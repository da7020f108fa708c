#include "core/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moe {

TokenLogprobs ComputeLogprobs(absl::Span<const float> logits, int32_t token,
                              int top) {
  TokenLogprobs out;
  out.token = token;
  if (logits.empty()) return out;
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max);
  const double log_norm = max + std::log(sum);
  auto logprob = [&](int32_t id) {
    return static_cast<float>(logits[id] - log_norm);
  };
  out.logprob = logprob(token);
  const int n = std::min<int>(std::max(top, 0), static_cast<int>(logits.size()));
  if (n == 0) return out;
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + n, order.end(),
                    [&](int32_t a, int32_t b) {
                      return logits[a] > logits[b] ||
                             (logits[a] == logits[b] && a < b);
                    });
  out.top.reserve(n);
  for (int i = 0; i < n; ++i) out.top.emplace_back(order[i], logprob(order[i]));
  return out;
}

}  // namespace moe
