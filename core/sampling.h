// Token sampling with Hugging Face `generate` semantics.
//
// Order of logits processors: repetition penalty, temperature, top-k, top-p,
// then a draw from the softmax. temperature == 0 means greedy (argmax, lowest
// id on ties).
#ifndef MOE_CORE_SAMPLING_H_
#define MOE_CORE_SAMPLING_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace moe {

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy
  int top_k = 0;                    // 0: off
  float top_p = 1.0f;               // in (0, 1]; 1: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field for NaN/Inf, negative temperature, top_k
// < 0, top_p outside (0, 1], repetition_penalty <= 0.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// Hugging Face RepetitionPenaltyLogitsProcessor: for every distinct token in
// `context`, a positive logit is divided by `penalty`, a negative one
// multiplied by it.
void ApplyRepetitionPenalty(absl::Span<float> logits,
                            absl::Span<const int32_t> context, float penalty);

// Index of the largest logit (lowest index among equals).
int32_t ArgMax(absl::Span<const float> logits);

// Per-sequence sampler. The random number of step i (the i-th token of the
// sequence, from 0) is a function of (seed, i) alone, so a sequence moved to
// another server after n tokens continues exactly as it would have: build
// the sampler there with first_step = n. Not thread-safe (one per sequence).
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params, int64_t first_step = 0);

  // Picks the next token. `logits` is scratch (modified); `context` is the
  // prompt plus the tokens generated so far (for the repetition penalty).
  int32_t Sample(absl::Span<float> logits, absl::Span<const int32_t> context);

 private:
  // Uniform in [0, 1) for step `step_`: SplitMix64 of the seed and the step.
  double UniformForStep() const;

  SamplingParams params_;
  int64_t step_;
};

}  // namespace moe

#endif  // MOE_CORE_SAMPLING_H_
