// Checks of the engine's greedy generations against a plain reference
// model (tests/reference_model.h, tests/reference_deepseek.h), shared by
// the family tests.
#ifndef MOE_TESTS_REFERENCE_CHECKS_H_
#define MOE_TESTS_REFERENCE_CHECKS_H_

#include <cstdint>
#include <vector>

#include "core/generator.h"
#include "gtest/gtest.h"
#include "tests/reference_model.h"

namespace moe::testing {

// Deterministic pseudo-random prompt of `length` ids in [3, vocab).
inline std::vector<int32_t> MakePrompt(int length, int vocab, uint32_t seed) {
  std::vector<int32_t> prompt;
  uint32_t state = seed * 2654435761u + 12345u;
  for (int i = 0; i < length; ++i) {
    state = state * 1664525u + 1013904223u;
    prompt.push_back(3 + static_cast<int32_t>((state >> 8) % (vocab - 3)));
  }
  return prompt;
}

// The engine's greedy continuation of `prompt` (`steps` tokens with their
// logits captured) against `reference`: teacher-forced along the engine's
// path, every step's logits within `tolerance` and the same argmax; then the
// reference's own greedy path. A near-tie in the reference fails the check
// (the greedy path would depend on rounding): pick another seed or prompt.
// `Reference` has AllLogits(tokens) and Greedy(prompt, n).
template <typename Reference>
void ExpectGreedyMatchesReference(const Reference& reference,
                                  const std::vector<int32_t>& prompt,
                                  const GenerationResult& result, int steps,
                                  double tolerance) {
  ASSERT_EQ(result.output.size(), static_cast<size_t>(steps));
  ASSERT_EQ(result.logits.size(), static_cast<size_t>(steps));
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), result.output.begin(), result.output.end() - 1);
  const std::vector<std::vector<float>> ref = reference.AllLogits(seq);
  for (int s = 0; s < steps; ++s) {
    SCOPED_TRACE(::testing::Message() << "step " << s);
    const std::vector<float>& want = ref[prompt.size() - 1 + s];
    ASSERT_GT(TopTwoMargin(want), 2 * tolerance)
        << "near-tie in the reference: pick another seed or prompt";
    EXPECT_TRUE(LogitsNear(result.logits[s], want, tolerance));
    EXPECT_EQ(result.output[s], ArgMax(want));
  }
  EXPECT_EQ(reference.Greedy(prompt, steps), result.output);
}

}  // namespace moe::testing

#endif  // MOE_TESTS_REFERENCE_CHECKS_H_
