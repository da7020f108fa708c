// Tests of LocalMoeExecutor (core/local_moe_executor.h) on the fixture
// weights: gating, grouped FFNs and the weighted combine against a plain
// double-precision MoE.
#include "core/local_moe_executor.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/model_weights.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/kernel_test_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureDir;
using ::moe::testing::RandomValues;

// Matrix-vector product w · x in double.
std::vector<double> MatVec(const TensorView& w, const std::vector<double>& x) {
  std::vector<double> y(w.rows(), 0.0);
  for (int64_t r = 0; r < w.rows(); ++r) {
    for (int64_t c = 0; c < w.cols(); ++c)
      y[r] += w.At(r * w.cols() + c) * x[c];
  }
  return y;
}

std::vector<double> Ffn(const FfnWeights& f, const std::vector<double>& x) {
  const std::vector<double> g = MatVec(f.gate, x), u = MatVec(f.up, x);
  std::vector<double> h(g.size());
  for (size_t i = 0; i < g.size(); ++i)
    h[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
  return MatVec(f.down, h);
}

struct RefToken {
  std::vector<double> out;
  std::vector<int32_t> experts;
  bool clear_margin;  // top-k set and order are unambiguous in float32
};

// Softmax top-k routing and the weighted sum of the chosen experts.
RefToken ReferenceMoe(const ModelWeights& w, int layer, const float* x) {
  const ModelConfig& c = w.config;
  const LayerWeights& lw = w.layers[layer];
  const std::vector<double> xd(x, x + c.hidden_size);
  const std::vector<double> logits = MatVec(lw.router_gate, xd);
  std::vector<int32_t> order(c.num_experts);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const int k = c.num_experts_per_tok;
  RefToken ref;
  ref.clear_margin = true;
  for (int j = 0; j + 1 < std::min(k + 1, c.num_experts); ++j) {
    if (logits[order[j]] - logits[order[j + 1]] < 1e-4)
      ref.clear_margin = false;
  }
  const double max = logits[order[0]];
  double total = 0, top = 0;
  for (double l : logits) total += std::exp(l - max);
  for (int j = 0; j < k; ++j) top += std::exp(logits[order[j]] - max);
  ref.out.assign(c.hidden_size, 0.0);
  for (int j = 0; j < k; ++j) {
    const double p = std::exp(logits[order[j]] - max) / total;
    const double weight = c.norm_topk_prob ? p * total / top : p;
    const std::vector<double> y = Ffn(lw.experts.at(order[j]), xd);
    for (int i = 0; i < c.hidden_size; ++i) ref.out[i] += weight * y[i];
    ref.experts.push_back(order[j]);
  }
  return ref;
}

class LocalMoeExecutorTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LocalMoeExecutorTest, MatchesPlainMoe) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
      Checkpoint::Open(FixtureDir(GetParam()));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<ModelWeights> w = LoadModelWeights(
      std::shared_ptr<Checkpoint>(std::move(*ckpt)), WeightSelection::Full());
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = w->config;
  std::mt19937 rng(77);
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    LocalMoeExecutor executor(&*w, &pool);
    int observed_calls = 0;
    Routing observed;
    executor.SetRoutingObserver([&](int layer, const Routing& r) {
      ++observed_calls;
      observed = r;
    });
    for (int layer = 0; layer < c.num_layers; ++layer) {
      if (!c.IsMoeLayer(layer)) continue;
      for (int64_t tokens : {1, 6, 23}) {
        SCOPED_TRACE(::testing::Message() << "layer " << layer << " tokens "
                                          << tokens << " threads " << threads);
        const std::vector<float> x =
            RandomValues(tokens * c.hidden_size, rng, -2.0f, 2.0f);
        std::vector<float> out((tokens + 1) * c.hidden_size, 1234.0f);
        const int calls_before = observed_calls;
        ASSERT_TRUE(executor.RunMoe(layer, x.data(), tokens, out.data()).ok());
        EXPECT_EQ(observed_calls, calls_before + 1);
        ASSERT_EQ(observed.tokens, tokens);
        ASSERT_EQ(observed.k, c.num_experts_per_tok);
        int compared = 0;
        for (int64_t t = 0; t < tokens; ++t) {
          const RefToken ref =
              ReferenceMoe(*w, layer, x.data() + t * c.hidden_size);
          if (!ref.clear_margin) continue;
          ++compared;
          for (int j = 0; j < c.num_experts_per_tok; ++j) {
            EXPECT_EQ(observed.experts[t * c.num_experts_per_tok + j],
                      ref.experts[j])
                << "token " << t << " slot " << j;
          }
          double scale = 0;
          for (double v : ref.out) scale = std::max(scale, std::fabs(v));
          for (int i = 0; i < c.hidden_size; ++i) {
            ASSERT_NEAR(out[t * c.hidden_size + i], ref.out[i],
                        1e-4 * scale + 1e-6)
                << "token " << t << " col " << i;
          }
        }
        EXPECT_GT(compared, 0);
        for (int i = 0; i < c.hidden_size; ++i) {
          ASSERT_EQ(out[tokens * c.hidden_size + i], 1234.0f)
              << "wrote past the tokens";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LocalMoeExecutorTest,
                         ::testing::Values("tiny-mixtral", "tiny-qwen2-moe"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace moe
