// Tests of core/gating.h (softmax top-k routing with each family's
// renormalisation rule) and GroupByExpert from core/local_moe_executor.h.
#include "core/gating.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/cpu/kernels.h"
#include "core/local_moe_executor.h"
#include "core/model_config.h"
#include "core/thread_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/kernel_test_util.h"

namespace moe {
namespace {

using ::moe::testing::OwnedTensor;
using ::moe::testing::RandomValues;
using ::testing::ElementsAre;

ModelConfig RouterConfig(ModelFamily family, int experts, int k,
                         bool norm_topk_prob) {
  ModelConfig c;
  c.family = family;
  c.hidden_size = 16;
  c.num_experts = experts;
  c.num_experts_per_tok = k;
  c.norm_topk_prob = norm_topk_prob;
  return c;
}

// Softmax over all experts in double, top-k by logit (ties: lower id), and
// the family's renormalisation.
Routing ReferenceRouting(const ModelConfig& c, const std::vector<float>& logits,
                         int64_t tokens, bool renormalise) {
  const int e = c.num_experts, k = c.num_experts_per_tok;
  Routing r;
  r.tokens = tokens;
  r.k = k;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits.data() + t * e;
    double max = -INFINITY;
    for (int i = 0; i < e; ++i) max = std::max<double>(max, l[i]);
    std::vector<double> p(e);
    double sum = 0;
    for (int i = 0; i < e; ++i) sum += p[i] = std::exp(l[i] - max);
    for (double& v : p) v /= sum;
    std::vector<int32_t> order(e);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return l[a] > l[b]; });
    double top = 0;
    for (int j = 0; j < k; ++j) top += p[order[j]];
    for (int j = 0; j < k; ++j) {
      r.experts.push_back(order[j]);
      r.weights.push_back(
          static_cast<float>(renormalise ? p[order[j]] / top : p[order[j]]));
    }
  }
  return r;
}

void ExpectRoutingEq(const Routing& got, const Routing& want) {
  ASSERT_EQ(got.tokens, want.tokens);
  ASSERT_EQ(got.k, want.k);
  ASSERT_EQ(got.experts.size(), want.experts.size());
  ASSERT_EQ(got.weights.size(), want.weights.size());
  for (int64_t t = 0; t < want.tokens; ++t) {
    for (int j = 0; j < want.k; ++j) {
      const size_t i = t * want.k + j;
      ASSERT_EQ(got.experts[i], want.experts[i])
          << "token " << t << " slot " << j;
      ASSERT_NEAR(got.weights[i], want.weights[i], 1e-6)
          << "token " << t << " slot " << j;
    }
  }
}

// Logits on a grid of 1/8 with many exact ties: distinct values are far
// apart, equal ones tie exactly.
std::vector<float> GridLogits(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(-24, 24);
  std::vector<float> out(n);
  for (float& v : out) v = dist(rng) / 8.0f;
  return out;
}

struct FamilyRule {
  ModelFamily family;
  bool norm_topk_prob;
  bool renormalises;  // what the routing must do
};

void CheckRules(const std::vector<FamilyRule>& rules) {
  std::mt19937 rng(3);
  for (const FamilyRule& rule : rules) {
    for (auto [experts, k] :
         {std::pair{8, 2}, std::pair{8, 3}, std::pair{60, 4}, std::pair{4, 1},
          std::pair{6, 6}}) {
      SCOPED_TRACE(absl::StrCat(FamilyName(rule.family), " norm_topk_prob=",
                                rule.norm_topk_prob, " E=", experts, " k=", k));
      const ModelConfig c =
          RouterConfig(rule.family, experts, k, rule.norm_topk_prob);
      const int64_t tokens = 50;
      const std::vector<float> logits = GridLogits(tokens * experts, rng);
      const Routing got = RouteFromLogits(c, logits.data(), tokens);
      ExpectRoutingEq(got,
                      ReferenceRouting(c, logits, tokens, rule.renormalises));
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(RouteFromLogitsTest, EachFamilyRule) {
  CheckRules({
      {ModelFamily::kMixtral, true, true},
      {ModelFamily::kQwen2Moe, false, false},
      {ModelFamily::kQwen2Moe, true, true},
      {ModelFamily::kQwen3Moe, false, false},
      {ModelFamily::kQwen3Moe, true, true},
      {ModelFamily::kOlmoe, false, false},
      {ModelFamily::kOlmoe, true, true},
  });
}

// gating.h: "Mixtral always" renormalises, whatever norm_topk_prob says (a
// hand-built ModelConfig, whose defaults are kMixtral and false, included).
TEST(RouteFromLogitsTest, MixtralRenormalisesWithoutTheFlag) {
  CheckRules({{ModelFamily::kMixtral, false, true}});
}

TEST(RouteFromLogitsTest, ParsedMixtralConfigRenormalises) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(R"({
    "architectures": ["MixtralForCausalLM"], "hidden_size": 16,
    "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 32,
    "intermediate_size": 8, "num_local_experts": 4, "num_experts_per_tok": 2})");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 3.0f};
  const Routing r = RouteFromLogits(*c, logits.data(), 1);
  EXPECT_THAT(r.experts, ElementsAre(3, 2));
  const double e = std::exp(1.0);
  EXPECT_NEAR(r.weights[0], e / (e + 1), 1e-6);
  EXPECT_NEAR(r.weights[1], 1 / (e + 1), 1e-6);
}

TEST(RouteFromLogitsTest, TiesGoToTheLowerId) {
  const ModelConfig c = RouterConfig(ModelFamily::kQwen2Moe, 8, 3, false);
  const std::vector<float> logits = {
      0,  0,  0, 0,  0, 0,  0,  0,  // all equal
      1,  3,  3, 0,  3, 2,  2,  3,  // four-way tie at the top
      5,  1,  1, 1,  1, 1,  1,  1,  // tie for second place
      -1, -1, 2, -1, 2, -1, -1, 2,
  };
  const Routing r = RouteFromLogits(c, logits.data(), 4);
  EXPECT_THAT(std::vector<int32_t>(r.experts.begin(), r.experts.begin() + 3),
              ElementsAre(0, 1, 2));
  EXPECT_THAT(
      std::vector<int32_t>(r.experts.begin() + 3, r.experts.begin() + 6),
      ElementsAre(1, 2, 4));
  EXPECT_THAT(
      std::vector<int32_t>(r.experts.begin() + 6, r.experts.begin() + 9),
      ElementsAre(0, 1, 2));
  EXPECT_THAT(std::vector<int32_t>(r.experts.begin() + 9, r.experts.end()),
              ElementsAre(2, 4, 7));
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(r.weights[j], 1.0 / 8, 1e-7);
}

TEST(RouteFromLogitsTest, WeightsDescendAndSumToOneWhenRenormalised) {
  std::mt19937 rng(4);
  const ModelConfig norm = RouterConfig(ModelFamily::kQwen3Moe, 16, 4, true);
  const ModelConfig raw = RouterConfig(ModelFamily::kQwen3Moe, 16, 4, false);
  const std::vector<float> logits = RandomValues(30 * 16, rng, -4.0f, 4.0f);
  const Routing rn = RouteFromLogits(norm, logits.data(), 30);
  const Routing rr = RouteFromLogits(raw, logits.data(), 30);
  for (int t = 0; t < 30; ++t) {
    double sum_n = 0, sum_r = 0;
    std::set<int32_t> distinct;
    for (int j = 0; j < 4; ++j) {
      sum_n += rn.weights[t * 4 + j];
      sum_r += rr.weights[t * 4 + j];
      distinct.insert(rn.experts[t * 4 + j]);
      EXPECT_EQ(rn.experts[t * 4 + j], rr.experts[t * 4 + j]);
      if (j > 0) {
        EXPECT_LE(rn.weights[t * 4 + j], rn.weights[t * 4 + j - 1]);
      }
    }
    EXPECT_EQ(distinct.size(), 4u);
    EXPECT_NEAR(sum_n, 1.0, 1e-6);
    EXPECT_LT(sum_r, 1.0);
    EXPECT_GT(sum_r, 0.25);  // top 4 of 16 hold at least a quarter
  }
}

TEST(ComputeRoutingTest, GateProductThenRouting) {
  std::mt19937 rng(5);
  const ModelConfig c = RouterConfig(ModelFamily::kMixtral, 8, 2, true);
  const int64_t hidden = c.hidden_size, tokens = 37;
  for (DType d : {DType::kBF16, DType::kF32}) {
    const OwnedTensor gate(d, {8, hidden}, RandomValues(8 * hidden, rng));
    const std::vector<float> x =
        RandomValues(tokens * hidden, rng, -2.0f, 2.0f);
    for (int threads : {1, 3}) {
      ThreadPool pool(threads);
      const Routing got =
          ComputeRouting(c, gate.view(), {}, x.data(), tokens, &pool);
      // Reference logits in double; tokens whose k-th and (k+1)-th logits
      // are too close to order reliably in float32 are skipped.
      std::vector<float> logits(tokens * 8);
      int compared = 0;
      for (int64_t t = 0; t < tokens; ++t) {
        std::vector<double> l(8);
        for (int e = 0; e < 8; ++e) {
          for (int64_t i = 0; i < hidden; ++i)
            l[e] += double{x[t * hidden + i]} * gate.At(e * hidden + i);
          logits[t * 8 + e] = static_cast<float>(l[e]);
        }
        std::vector<double> sorted = l;
        std::sort(sorted.rbegin(), sorted.rend());
        if (sorted[0] - sorted[1] < 1e-4 || sorted[1] - sorted[2] < 1e-4)
          continue;
        const Routing want =
            ReferenceRouting(c,
                             std::vector<float>(logits.begin() + t * 8,
                                                logits.begin() + (t + 1) * 8),
                             1, true);
        for (int j = 0; j < 2; ++j) {
          EXPECT_EQ(got.experts[t * 2 + j], want.experts[j]) << "token " << t;
          EXPECT_NEAR(got.weights[t * 2 + j], want.weights[j], 1e-5)
              << "token " << t;
        }
        ++compared;
      }
      EXPECT_GT(compared, 30);
    }
  }
}

TEST(GroupByExpertTest, TokensInOrderPerExpert) {
  Routing r;
  r.tokens = 5;
  r.k = 2;
  r.experts = {3, 1, 1, 0, 3, 2, 0, 1, 5, 3};
  r.weights = {0.6f, 0.4f, 0.7f, 0.3f, 0.55f, 0.45f, 0.9f, 0.1f, 0.5f, 0.5f};
  const std::vector<ExpertAssignment> groups = GroupByExpert(r);
  std::map<int32_t, const ExpertAssignment*> by_expert;
  for (const ExpertAssignment& a : groups) {
    EXPECT_TRUE(by_expert.emplace(a.expert, &a).second)
        << "expert " << a.expert << " twice";
  }
  ASSERT_EQ(by_expert.size(), 5u);  // experts 0, 1, 2, 3, 5; 4 unused
  EXPECT_EQ(by_expert.count(4), 0u);
  EXPECT_THAT(by_expert[0]->tokens, ElementsAre(1, 3));
  EXPECT_THAT(by_expert[0]->weights, ElementsAre(0.3f, 0.9f));
  EXPECT_THAT(by_expert[1]->tokens, ElementsAre(0, 1, 3));
  EXPECT_THAT(by_expert[1]->weights, ElementsAre(0.4f, 0.7f, 0.1f));
  EXPECT_THAT(by_expert[2]->tokens, ElementsAre(2));
  EXPECT_THAT(by_expert[2]->weights, ElementsAre(0.45f));
  EXPECT_THAT(by_expert[3]->tokens, ElementsAre(0, 2, 4));
  EXPECT_THAT(by_expert[3]->weights, ElementsAre(0.6f, 0.55f, 0.5f));
  EXPECT_THAT(by_expert[5]->tokens, ElementsAre(4));
  EXPECT_THAT(by_expert[5]->weights, ElementsAre(0.5f));
}

TEST(GroupByExpertTest, EverySlotAppearsExactlyOnce) {
  std::mt19937 rng(6);
  const ModelConfig c = RouterConfig(ModelFamily::kQwen2Moe, 16, 4, false);
  const int64_t tokens = 200;
  const std::vector<float> logits = RandomValues(tokens * 16, rng, -3.0f, 3.0f);
  const Routing r = RouteFromLogits(c, logits.data(), tokens);
  const std::vector<ExpertAssignment> groups = GroupByExpert(r);
  std::map<std::pair<int32_t, int32_t>, float>
      seen;  // (token, expert) -> weight
  for (const ExpertAssignment& a : groups) {
    ASSERT_EQ(a.tokens.size(), a.weights.size());
    ASSERT_FALSE(a.tokens.empty());
    EXPECT_TRUE(std::is_sorted(a.tokens.begin(), a.tokens.end()));
    for (size_t i = 0; i < a.tokens.size(); ++i) {
      EXPECT_TRUE(
          seen.emplace(std::pair{a.tokens[i], a.expert}, a.weights[i]).second);
    }
  }
  ASSERT_EQ(seen.size(), static_cast<size_t>(tokens * 4));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < 4; ++j) {
      const auto it =
          seen.find({static_cast<int32_t>(t), r.experts[t * 4 + j]});
      ASSERT_NE(it, seen.end());
      EXPECT_EQ(it->second, r.weights[t * 4 + j]);
    }
  }
}

TEST(GroupByExpertTest, EmptyRouting) {
  Routing r;
  r.k = 2;
  EXPECT_TRUE(GroupByExpert(r).empty());
}

}  // namespace
}  // namespace moe
