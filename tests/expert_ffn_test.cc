// Tests of core/expert_ffn.h: grouped SwiGLU FFNs against a plain
// double-precision SwiGLU.
#include "core/expert_ffn.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model_weights.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/kernel_test_util.h"

namespace moe {
namespace {

using ::moe::testing::OwnedTensor;
using ::moe::testing::RandomValues;

constexpr float kSentinel = 4242.0f;
constexpr int64_t kHidden = 32;

// Weights of one FFN, owned.
struct Expert {
  OwnedTensor gate, up, down;
  FfnWeights view() const { return {gate.view(), up.view(), down.view()}; }
};

Expert RandomExpert(DType dtype, int64_t inter, std::mt19937& rng) {
  return {
      OwnedTensor(dtype, {inter, kHidden}, RandomValues(inter * kHidden, rng)),
      OwnedTensor(dtype, {inter, kHidden}, RandomValues(inter * kHidden, rng)),
      OwnedTensor(dtype, {kHidden, inter}, RandomValues(kHidden * inter, rng))};
}

// down(silu(gate x) * up x) in double for one token, with a bound on the
// float32 error: each product's rounding is at most kRel times the sum of
// the magnitudes of its terms, propagated through silu (|silu'| < 1.1).
void ReferenceFfn(const Expert& e, const float* x, std::vector<double>& out,
                  std::vector<double>& tol) {
  constexpr double kRel = 1e-5;
  const int64_t inter = e.gate.view().rows();
  std::vector<double> h(inter), h_err(inter);
  for (int64_t i = 0; i < inter; ++i) {
    double g = 0, u = 0, g_abs = 0, u_abs = 0;
    for (int64_t c = 0; c < kHidden; ++c) {
      g += x[c] * e.gate.At(i * kHidden + c);
      u += x[c] * e.up.At(i * kHidden + c);
      g_abs += std::fabs(x[c] * e.gate.At(i * kHidden + c));
      u_abs += std::fabs(x[c] * e.up.At(i * kHidden + c));
    }
    const double silu = g / (1 + std::exp(-g));
    h[i] = silu * u;
    h_err[i] = kRel * (1.1 * g_abs * (std::fabs(u) + kRel * u_abs) +
                       std::fabs(silu) * u_abs + std::fabs(h[i]));
  }
  out.assign(kHidden, 0.0);
  tol.assign(kHidden, 0.0);
  for (int64_t j = 0; j < kHidden; ++j) {
    for (int64_t i = 0; i < inter; ++i) {
      const double d = e.down.At(j * inter + i);
      out[j] += d * h[i];
      tol[j] += std::fabs(d) * (kRel * std::fabs(h[i]) + h_err[i]);
    }
  }
}

struct GroupSpec {
  int expert;  // index into the experts
  int64_t tokens;
};

// Runs `specs` through `runner` and checks each group's rows; the row after
// each group's output must stay untouched.
void RunAndCheck(GroupedFfnRunner& runner, const std::vector<Expert>& experts,
                 const std::vector<GroupSpec>& specs, ThreadPool* pool,
                 std::mt19937& rng) {
  std::vector<FfnWeights> views;
  for (const Expert& e : experts) views.push_back(e.view());
  std::vector<std::vector<float>> xs, outs;
  std::vector<FfnGroup> groups;
  for (const GroupSpec& s : specs) {
    xs.push_back(RandomValues((s.tokens + 1) * kHidden, rng, -2.0f, 2.0f));
    outs.emplace_back((s.tokens + 1) * kHidden, kSentinel);
  }
  for (size_t g = 0; g < specs.size(); ++g) {
    groups.push_back({&views[specs[g].expert], xs[g].data(), specs[g].tokens,
                      outs[g].data()});
  }
  runner.Run(groups, pool);
  std::vector<double> want, tol;
  for (size_t g = 0; g < specs.size(); ++g) {
    SCOPED_TRACE(absl::StrCat("group ", g, " expert ", specs[g].expert,
                              " tokens ", specs[g].tokens));
    for (int64_t t = 0; t < specs[g].tokens; ++t) {
      ReferenceFfn(experts[specs[g].expert], xs[g].data() + t * kHidden, want,
                   tol);
      for (int64_t j = 0; j < kHidden; ++j) {
        ASSERT_NEAR(outs[g][t * kHidden + j], want[j], tol[j])
            << "token " << t << " col " << j;
      }
    }
    for (int64_t j = 0; j < kHidden; ++j) {
      ASSERT_EQ(outs[g][specs[g].tokens * kHidden + j], kSentinel)
          << "wrote past the group's tokens";
    }
  }
}

class GroupedFfnTest : public ::testing::TestWithParam<int> {};

TEST_P(GroupedFfnTest, MatchesPlainSwiGlu) {
  std::mt19937 rng(21);
  std::vector<Expert> experts;
  experts.push_back(RandomExpert(DType::kBF16, 48, rng));
  experts.push_back(RandomExpert(DType::kBF16, 48, rng));
  experts.push_back(
      RandomExpert(DType::kF32, 80, rng));  // e.g. a shared expert
  experts.push_back(RandomExpert(DType::kF16, 17, rng));
  ThreadPool pool(GetParam());
  GroupedFfnRunner runner;
  // Several groups of different sizes, one expert used twice, an empty group.
  RunAndCheck(runner, experts,
              {{0, 3}, {1, 1}, {2, 5}, {0, 0}, {1, 17}, {3, 4}, {0, 2}}, &pool,
              rng);
  // The runner's scratch is reused: a smaller call after a larger one, then
  // a larger one again.
  RunAndCheck(runner, experts, {{2, 1}}, &pool, rng);
  RunAndCheck(runner, experts, {{3, 40}, {1, 33}, {2, 9}}, &pool, rng);
  RunAndCheck(runner, experts, {}, &pool, rng);
}

INSTANTIATE_TEST_SUITE_P(Threads, GroupedFfnTest, ::testing::Values(1, 2, 3));

}  // namespace
}  // namespace moe
