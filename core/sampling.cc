#include "core/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace moe {

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "temperature must be finite and >= 0, got ", p.temperature));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be >= 0 (0 disables), got ", p.top_k));
  }
  if (!std::isfinite(p.top_p) || p.top_p <= 0 || p.top_p > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition_penalty must be finite and > 0, got ", p.repetition_penalty));
  }
  return absl::OkStatus();
}

void ApplyRepetitionPenalty(absl::Span<float> logits,
                            absl::Span<const int32_t> context, float penalty) {
  if (penalty == 1.0f) return;
  absl::flat_hash_set<int32_t> seen;
  for (int32_t id : context) {
    if (id < 0 || id >= static_cast<int32_t>(logits.size())) continue;
    if (!seen.insert(id).second) continue;
    float& l = logits[id];
    l = l > 0 ? l / penalty : l * penalty;
  }
}

int32_t ArgMax(absl::Span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

Sampler::Sampler(const SamplingParams& params, int64_t first_step)
    : params_(params), step_(first_step) {}

double Sampler::UniformForStep() const {
  // SplitMix64 (Steele, Lea, Flood 2014) of seed + golden-ratio * step: a
  // counter-based generator, so any step's number is computed directly.
  uint64_t z = params_.seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(step_ + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;  // 53 random bits
}

int32_t Sampler::Sample(absl::Span<float> logits,
                        absl::Span<const int32_t> context) {
  const double r = UniformForStep();
  ++step_;
  ApplyRepetitionPenalty(logits, context, params_.repetition_penalty);
  if (params_.temperature == 0.0f) return ArgMax(logits);

  // Candidates sorted by logit, descending (ties: lower id first).
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t keep = ids.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    keep = params_.top_k;
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), better);
    ids.resize(keep);
  } else {
    std::sort(ids.begin(), ids.end(), better);
  }
  // Softmax of logits / T in double, shifted by the best logit so that a
  // tiny temperature cannot overflow: the best candidate gets exp(0) = 1.
  std::vector<double> probs(keep);
  const double inv_t = 1.0 / static_cast<double>(params_.temperature);
  const double best = logits[ids[0]];
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) {
    const double diff = logits[ids[i]] - best;  // <= 0
    probs[i] = diff == 0 ? 1.0 : std::exp(diff * inv_t);
    mass += probs[i];
  }
  for (size_t i = 0; i < keep; ++i) probs[i] /= mass;
  if (params_.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += probs[n++];
      if (cum >= params_.top_p) break;
    }
    keep = n;
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += probs[i];
    for (size_t i = 0; i < keep; ++i) probs[i] /= total;
  }
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += probs[i];
    if (r < cum) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace moe
