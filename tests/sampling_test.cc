// Tests of core/sampling.h against Hugging Face `generate` semantics: greedy,
// repetition penalty, temperature, top-k, top-p, seeding, and the empirical
// distribution of draws.
#include "core/sampling.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

SamplingParams Params(float temperature, int top_k = 0, float top_p = 1.0f,
                      float penalty = 1.0f, uint64_t seed = 0) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.repetition_penalty = penalty;
  p.seed = seed;
  return p;
}

// Counts of each id over `draws` samples from `logits` (copied per draw,
// since Sample treats its input as scratch).
std::map<int32_t, int> Histogram(const SamplingParams& params,
                                 const std::vector<float>& logits, int draws,
                                 const std::vector<int32_t>& context = {}) {
  Sampler sampler(params);
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) {
    std::vector<float> scratch = logits;
    ++counts[sampler.Sample(absl::MakeSpan(scratch), context)];
  }
  return counts;
}

std::set<int32_t> Keys(const std::map<int32_t, int>& counts) {
  std::set<int32_t> keys;
  for (const auto& [id, n] : counts) keys.insert(id);
  return keys;
}

// softmax(logits / temperature) in double.
std::vector<double> SoftmaxRef(const std::vector<float>& logits,
                               double temperature) {
  double max = -INFINITY;
  for (float l : logits) max = std::max(max, l / temperature);
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp(logits[i] / temperature - max);
    sum += p[i];
  }
  for (double& v : p) v /= sum;
  return p;
}

// Each count within 5 standard deviations of draws * p (binomial).
void ExpectCountsMatch(const std::map<int32_t, int>& counts,
                       const std::vector<double>& p, int draws) {
  for (size_t id = 0; id < p.size(); ++id) {
    const double mean = draws * p[id];
    const double sd = std::sqrt(draws * p[id] * (1 - p[id]));
    const int n = counts.count(id) ? counts.at(id) : 0;
    EXPECT_NEAR(n, mean, 5 * sd + 1e-9) << "id " << id << " p " << p[id];
  }
}

TEST(ValidateSamplingParamsTest, AcceptsValidValues) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}).ok());
  EXPECT_TRUE(ValidateSamplingParams(Params(0.0f)).ok());
  EXPECT_TRUE(ValidateSamplingParams(Params(1.5f, 40, 0.9f, 1.2f, 7)).ok());
  EXPECT_TRUE(ValidateSamplingParams(Params(1.0f, 0, 1.0f)).ok());
  EXPECT_TRUE(ValidateSamplingParams(Params(1.0f, 0, 1e-6f)).ok());
  EXPECT_TRUE(ValidateSamplingParams(Params(1.0f, 0, 1.0f, 0.5f)).ok());
}

TEST(ValidateSamplingParamsTest, RejectsBadValuesNamingTheField) {
  struct Case {
    SamplingParams params;
    const char* field;
  };
  const Case cases[] = {
      {Params(kNaN), "temperature"},
      {Params(kInf), "temperature"},
      {Params(-kInf), "temperature"},
      {Params(-0.1f), "temperature"},
      {Params(1.0f, -1), "top_k"},
      {Params(1.0f, 0, 0.0f), "top_p"},
      {Params(1.0f, 0, -0.5f), "top_p"},
      {Params(1.0f, 0, 1.0001f), "top_p"},
      {Params(1.0f, 0, kNaN), "top_p"},
      {Params(1.0f, 0, kInf), "top_p"},
      {Params(1.0f, 0, 1.0f, 0.0f), "repetition_penalty"},
      {Params(1.0f, 0, 1.0f, -1.0f), "repetition_penalty"},
      {Params(1.0f, 0, 1.0f, kNaN), "repetition_penalty"},
      {Params(1.0f, 0, 1.0f, kInf), "repetition_penalty"},
  };
  for (const Case& c : cases) {
    absl::Status s = ValidateSamplingParams(c.params);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument)
        << c.field << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(c.field));
  }
}

TEST(ArgMaxTest, LargestWithLowestIdOnTies) {
  EXPECT_EQ(ArgMax(std::vector<float>{1, 3, 2}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{1, 3, 3, 2}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{5, 5, 5}), 0);
  EXPECT_EQ(ArgMax(std::vector<float>{-kInf, -kInf, -1}), 2);
  EXPECT_EQ(ArgMax(std::vector<float>{-2, -1, -3}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{0, 0, kInf, kInf}), 2);
  EXPECT_EQ(ArgMax(std::vector<float>{4}), 0);
}

TEST(SamplerTest, GreedyIsArgMaxRegardlessOfOtherSettings) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
  for (uint64_t seed : {0, 1, 99}) {
    for (int top_k : {0, 1, 3}) {
      Sampler sampler(Params(0.0f, top_k, 0.5f, 1.0f, seed));
      for (int i = 0; i < 20; ++i) {
        std::vector<float> scratch = logits;
        ASSERT_EQ(sampler.Sample(absl::MakeSpan(scratch), {}), 1);
      }
    }
  }
}

TEST(RepetitionPenaltyTest, HuggingFaceSemantics) {
  std::vector<float> logits = {2.0f, -2.0f, 0.5f, -0.5f, 3.0f, 0.0f};
  // Token 0 three times, token 1 twice: each penalised once.
  const std::vector<int32_t> context = {0, 1, 0, 0, 3, 1, 5};
  ApplyRepetitionPenalty(absl::MakeSpan(logits), context, 2.0f);
  EXPECT_THAT(logits, ElementsAre(1.0f, -4.0f, 0.5f, -1.0f, 3.0f, 0.0f));
}

TEST(RepetitionPenaltyTest, PenaltyBelowOneFavoursSeenTokens) {
  std::vector<float> logits = {2.0f, -2.0f, 1.0f};
  ApplyRepetitionPenalty(absl::MakeSpan(logits), std::vector<int32_t>{0, 1},
                         0.5f);
  EXPECT_THAT(logits, ElementsAre(4.0f, -1.0f, 1.0f));
}

TEST(RepetitionPenaltyTest, OneAndEmptyContextChangeNothing) {
  std::vector<float> logits = {2.0f, -2.0f, 1.0f};
  ApplyRepetitionPenalty(absl::MakeSpan(logits), std::vector<int32_t>{0, 1, 2},
                         1.0f);
  EXPECT_THAT(logits, ElementsAre(2.0f, -2.0f, 1.0f));
  ApplyRepetitionPenalty(absl::MakeSpan(logits), {}, 3.0f);
  EXPECT_THAT(logits, ElementsAre(2.0f, -2.0f, 1.0f));
}

TEST(SamplerTest, GreedyAppliesRepetitionPenalty) {
  // 5 / 1.5 = 3.33 < 4.9: the penalty flips the choice.
  Sampler sampler(Params(0.0f, 0, 1.0f, 1.5f));
  std::vector<float> logits = {5.0f, 4.9f, 1.0f};
  EXPECT_EQ(sampler.Sample(absl::MakeSpan(logits), std::vector<int32_t>{0}), 1);
  // Negative logits are multiplied: -1 * 1.5 < -1.2.
  Sampler neg(Params(0.0f, 0, 1.0f, 1.5f));
  logits = {-1.0f, -1.2f};
  EXPECT_EQ(neg.Sample(absl::MakeSpan(logits), std::vector<int32_t>{0}), 1);
  // Without the context the larger logit wins.
  logits = {5.0f, 4.9f, 1.0f};
  EXPECT_EQ(sampler.Sample(absl::MakeSpan(logits), {}), 0);
}

TEST(SamplerTest, EmpiricalDistributionMatchesSoftmax) {
  const std::vector<float> logits = {1.0f, 0.0f, 2.0f, -1.0f, 0.5f, 1.5f};
  constexpr int kDraws = 20000;
  const std::map<int32_t, int> counts =
      Histogram(Params(1.0f, 0, 1.0f, 1.0f, 42), logits, kDraws);
  ExpectCountsMatch(counts, SoftmaxRef(logits, 1.0), kDraws);
}

TEST(SamplerTest, TemperatureScalesLogits) {
  const std::vector<float> logits = {1.0f, 0.0f, 2.0f, -1.0f};
  constexpr int kDraws = 20000;
  for (float t : {0.5f, 2.0f, 3.0f}) {
    SCOPED_TRACE(t);
    const std::map<int32_t, int> counts =
        Histogram(Params(t, 0, 1.0f, 1.0f, 7), logits, kDraws);
    ExpectCountsMatch(counts, SoftmaxRef(logits, t), kDraws);
  }
  // A tiny temperature is almost greedy.
  const std::map<int32_t, int> cold =
      Histogram(Params(0.01f, 0, 1.0f, 1.0f, 3), logits, 2000);
  EXPECT_EQ(cold.size(), 1u);
  EXPECT_EQ(cold.begin()->first, 2);
}

TEST(SamplerTest, RepetitionPenaltyAppliesBeforeSampling) {
  const std::vector<float> logits = {2.0f, 1.0f, -1.0f};
  const std::vector<int32_t> context = {0, 0, 2};
  constexpr int kDraws = 20000;
  const std::map<int32_t, int> counts =
      Histogram(Params(1.0f, 0, 1.0f, 2.0f, 11), logits, kDraws, context);
  ExpectCountsMatch(counts, SoftmaxRef({1.0f, 1.0f, -2.0f}, 1.0), kDraws);
}

TEST(SamplerTest, TopKKeepsExactlyKCandidates) {
  // 40 logits; the top 5 (ids 31, 4, 17, 8, 22) are close together and the
  // rest close behind, so without top-k many others would appear.
  std::vector<float> logits(40);
  for (int i = 0; i < 40; ++i) logits[i] = 9.0f - 0.01f * i;
  const std::vector<int32_t> top = {31, 4, 17, 8, 22};
  for (size_t r = 0; r < top.size(); ++r) logits[top[r]] = 10.0f - 0.1f * r;
  for (int k : {1, 2, 5}) {
    SCOPED_TRACE(k);
    const std::map<int32_t, int> counts =
        Histogram(Params(1.0f, k, 1.0f, 1.0f, 5), logits, 5000);
    EXPECT_EQ(Keys(counts), std::set<int32_t>(top.begin(), top.begin() + k));
  }
  // The control: without top-k, ids outside the top 5 are drawn.
  const std::map<int32_t, int> all =
      Histogram(Params(1.0f, 0, 1.0f, 1.0f, 5), logits, 5000);
  EXPECT_GT(all.size(), 20u);
  // top_k larger than the vocabulary keeps everything.
  const std::map<int32_t, int> big =
      Histogram(Params(1.0f, 1000, 1.0f, 1.0f, 5), logits, 5000);
  EXPECT_GT(big.size(), 20u);
}

TEST(SamplerTest, TopKDistributionIsRenormalised) {
  const std::vector<float> logits = {0.0f, 1.0f, 0.5f, 1.2f, -0.3f};
  constexpr int kDraws = 20000;
  const std::map<int32_t, int> counts =
      Histogram(Params(1.0f, 3, 1.0f, 1.0f, 8), logits, kDraws);
  EXPECT_EQ(Keys(counts), (std::set<int32_t>{1, 2, 3}));
  std::vector<double> p = SoftmaxRef({-kInf, 1.0f, 0.5f, 1.2f, -kInf}, 1.0);
  ExpectCountsMatch(counts, p, kDraws);
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (ids shuffled).
  const std::vector<int32_t> order = {2, 0, 3, 1};  // by probability
  const double probs[] = {0.5, 0.3, 0.15, 0.05};
  std::vector<float> logits(4);
  for (int r = 0; r < 4; ++r) logits[order[r]] = std::log(probs[r]);
  struct Case {
    float top_p;
    int kept;  // how many of `order` can appear
  };
  for (const Case& c :
       {Case{0.3f, 1}, Case{0.49f, 1}, Case{0.51f, 2}, Case{0.75f, 2},
        Case{0.79f, 2}, Case{0.81f, 3}, Case{0.9f, 3}, Case{0.94f, 3},
        Case{0.96f, 4}, Case{1.0f, 4}}) {
    SCOPED_TRACE(c.top_p);
    constexpr int kDraws = 5000;
    const std::map<int32_t, int> counts =
        Histogram(Params(1.0f, 0, c.top_p, 1.0f, 17), logits, kDraws);
    EXPECT_EQ(Keys(counts),
              std::set<int32_t>(order.begin(), order.begin() + c.kept));
    // The kept candidates are drawn in proportion to their probabilities.
    double mass = 0;
    for (int r = 0; r < c.kept; ++r) mass += probs[r];
    std::vector<double> p(4, 0.0);
    for (int r = 0; r < c.kept; ++r) p[order[r]] = probs[r] / mass;
    ExpectCountsMatch(counts, p, kDraws);
  }
}

TEST(SamplerTest, TopPAppliesAfterTopKAndTemperature) {
  // Probabilities 0.4, 0.35, 0.25. Top-k 2 leaves 0.533 / 0.467, so top-p
  // 0.5 keeps only id 0; on the full distribution it would keep two.
  const std::vector<float> logits = {std::log(0.4f), std::log(0.35f),
                                     std::log(0.25f)};
  std::map<int32_t, int> counts =
      Histogram(Params(1.0f, 2, 0.5f, 1.0f, 2), logits, 3000);
  EXPECT_EQ(Keys(counts), (std::set<int32_t>{0}));
  counts = Histogram(Params(1.0f, 0, 0.5f, 1.0f, 2), logits, 3000);
  EXPECT_EQ(Keys(counts), (std::set<int32_t>{0, 1}));
  // Temperature 0.5 sharpens to 0.47 / 0.36 / 0.18: top-p 0.45 keeps one.
  counts = Histogram(Params(0.5f, 0, 0.45f, 1.0f, 2), logits, 3000);
  EXPECT_EQ(Keys(counts), (std::set<int32_t>{0}));
  // Temperature 3 flattens to 0.36 / 0.34 / 0.30: top-p 0.65 keeps two.
  counts = Histogram(Params(3.0f, 0, 0.65f, 1.0f, 2), logits, 3000);
  EXPECT_EQ(Keys(counts), (std::set<int32_t>{0, 1}));
  counts = Histogram(Params(3.0f, 0, 0.75f, 1.0f, 2), logits, 3000);
  EXPECT_EQ(Keys(counts), (std::set<int32_t>{0, 1, 2}));
}

TEST(SamplerTest, TinyPositiveTemperatureIsNearlyGreedy) {
  // softmax(logits / T) concentrates on the argmax as T -> 0+; a valid but
  // tiny temperature must not overflow into NaN probabilities (logits of
  // typical magnitude).
  for (float t : {1e-3f, 1e-20f, 1e-37f, 1e-38f,
                  std::numeric_limits<float>::denorm_min()}) {
    SCOPED_TRACE(t);
    ASSERT_TRUE(ValidateSamplingParams(Params(t)).ok());
    const std::map<int32_t, int> counts = Histogram(
        Params(t, 0, 1.0f, 1.0f, 9), {10.0f, 30.0f, 20.0f, -40.0f}, 200);
    EXPECT_EQ(Keys(counts), (std::set<int32_t>{1}));
  }
}

TEST(SamplerTest, MaskedLogitsAreNeverDrawn) {
  const std::vector<float> logits = {-kInf, 0.0f, -kInf, 0.0f};
  const std::map<int32_t, int> counts =
      Histogram(Params(1.0f, 0, 1.0f, 1.0f, 4), logits, 2000);
  EXPECT_EQ(Keys(counts), (std::set<int32_t>{1, 3}));
}

std::vector<int32_t> Draw(uint64_t seed, int n) {
  Sampler sampler(Params(1.0f, 0, 1.0f, 1.0f, seed));
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    std::vector<float> logits(50, 0.0f);  // uniform over 50 ids
    out.push_back(sampler.Sample(absl::MakeSpan(logits), {}));
  }
  return out;
}

TEST(SamplerTest, ASamplerResumedAtStepNContinuesTheSameSequence) {
  const std::vector<int32_t> all = Draw(77, 40);
  SamplingParams params = Params(1.0f, 0, 1.0f, 1.0f, 77);
  Sampler resumed(params, /*first_step=*/25);
  for (int i = 25; i < 40; ++i) {
    std::vector<float> logits(50, 0.0f);
    EXPECT_EQ(resumed.Sample(absl::MakeSpan(logits), {}), all[i]) << i;
  }
}

TEST(SamplerTest, SameSeedSameSequenceDifferentSeedsDiffer) {
  const std::vector<int32_t> a = Draw(1234, 200);
  EXPECT_THAT(Draw(1234, 200), ElementsAreArray(a));
  EXPECT_NE(Draw(1235, 200), a);
  EXPECT_NE(Draw(0, 200), a);
  // Successive draws of one sampler are not all the same.
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 30u);
}

}  // namespace
}  // namespace moe
