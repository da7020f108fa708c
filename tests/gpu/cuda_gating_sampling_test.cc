// The gating and sampling kernels of core/cuda/kernels.h (TopKGating,
// ArgMaxRows, SampleRows) against RouteFromLogits, ArgMax and
// Sampler::Sample; tolerances as stated in cuda_kernels_test.cc (expert ids
// and tokens bit-exact, gating weights 2e-6 relative).
// Every test skips where no CUDA GPU is usable.

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "core/cpu/kernels.h"
#include "core/cuda/device_buffer.h"
#include "core/cuda/kernels.h"
#include "core/dtype.h"
#include "core/gating.h"
#include "core/model_config.h"
#include "core/sampling.h"
#include "gtest/gtest.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernel_test_util.h"

#include "tests/gpu/cuda_test_util.h"

namespace moe::cuda {
namespace {

using namespace ::moe::cuda::test;  // the helpers of cuda_test_util.h

// ---------------------------------------------------------------------------
// TopKGating

ModelConfig GatingConfig(ModelFamily family, int experts, int k,
                         bool norm_topk_prob) {
  ModelConfig config;
  config.family = family;
  config.num_experts = experts;
  config.num_experts_per_tok = k;
  config.norm_topk_prob = norm_topk_prob;
  return config;
}


void ExpectGatingMatches(const ModelConfig& config,
                         const std::vector<float>& logits, int64_t tokens) {
  const Routing expected = RouteFromLogits(config, logits.data(), tokens);
  const int k = config.num_experts_per_tok;
  DeviceBuffer<float> dl = Upload(logits);
  DeviceBuffer<int32_t> de;
  DeviceBuffer<float> dw;
  ASSERT_TRUE(de.Reserve(tokens * k).ok());
  ASSERT_TRUE(dw.Reserve(tokens * k).ok());
  ExpectRan(TopKGating(dl.data(), tokens, config.num_experts, k,
                       TopKIsRenormalised(config), de.data(), dw.data(), nullptr));
  EXPECT_TRUE(BitsEqual(Download(de.data(), tokens * k), expected.experts));
  EXPECT_TRUE(
      AllRelNear(Download(dw.data(), tokens * k), expected.weights, 2e-6));
}

struct GatingCase {
  ModelFamily family;
  int experts;
  int k;
  bool norm;
};
constexpr GatingCase kGatingCases[] = {
    {ModelFamily::kMixtral, 8, 2, false},
    {ModelFamily::kQwen2Moe, 60, 4, false},
    {ModelFamily::kQwen3Moe, 128, 8, true},
    {ModelFamily::kOlmoe, 64, 8, false},
    {ModelFamily::kQwen3Moe, 1024, 32, true},
    {ModelFamily::kOlmoe, 3, 3, false},
    {ModelFamily::kMixtral, 1, 1, true},
    {ModelFamily::kQwen2Moe, 33, 5, true},
};

TEST(CudaKernelsTest, TopKGatingMatchesRouteFromLogits) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(13);
  for (const GatingCase& g : kGatingCases) {
    SCOPED_TRACE(absl::StrCat("experts ", g.experts, " k ", g.k));
    const ModelConfig config = GatingConfig(g.family, g.experts, g.k, g.norm);
    constexpr int64_t kTokens = 37;  // not a multiple of the 4 per block
    // Distinct logits at least 1/16 apart, so no two probabilities are
    // within the few ulps by which device and host expf may differ.
    std::vector<float> logits(kTokens * g.experts);
    std::vector<int> rank(g.experts);
    std::iota(rank.begin(), rank.end(), 0);
    for (int64_t t = 0; t < kTokens; ++t) {
      std::shuffle(rank.begin(), rank.end(), rng);
      for (int e = 0; e < g.experts; ++e) {
        logits[t * g.experts + e] =
            static_cast<float>(rank[e]) / 16.0f - g.experts / 32.0f;
      }
    }
    ExpectGatingMatches(config, logits, kTokens);
  }
}

TEST(CudaKernelsTest, TopKGatingBreaksTiesTowardsTheLowerId) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(14);
  std::uniform_int_distribution<int> level(0, 2);
  for (const GatingCase& g : kGatingCases) {
    SCOPED_TRACE(absl::StrCat("experts ", g.experts, " k ", g.k));
    const ModelConfig config = GatingConfig(g.family, g.experts, g.k, g.norm);
    constexpr int64_t kTokens = 9;
    // Three logit levels (many exact ties), and an all-equal token.
    std::vector<float> logits(kTokens * g.experts);
    for (float& l : logits) l = 0.5f * level(rng);
    std::fill(logits.begin(), logits.begin() + g.experts, 1.25f);
    ExpectGatingMatches(config, logits, kTokens);
  }
}

TEST(CudaKernelsTest, TopKGatingRejectsUnsupportedSizes) {
  MOE_SKIP_WITHOUT_GPU();
  const struct {
    int experts;
    int k;
  } bad[] = {{64, 33}, {8, 9}, {1025, 8}, {0, 1}};
  for (const auto& b : bad) {
    const absl::Status status =
        TopKGating(nullptr, 4, b.experts, b.k, true, nullptr, nullptr, nullptr);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
        << "experts " << b.experts << " k " << b.k << ": " << status;
  }
}

// ---------------------------------------------------------------------------
// ArgMaxRows

TEST(CudaKernelsTest, ArgMaxRowsMatchesArgMax) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(15);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const int64_t n : {1, 2, 31, 1000, 4099, 151936, 262144}) {
    SCOPED_TRACE(absl::StrCat("n ", n));
    constexpr int64_t kRows = 8;
    std::vector<float> logits = RandomValues(kRows * n, rng, -5.0f, 5.0f);
    auto row = [&](int64_t r) { return logits.begin() + r * n; };
    // Row 1: the maximum three times (the lowest index wins).
    if (n > 3) {
      row(1)[n - 1] = row(1)[n / 2] = row(1)[n / 3] = 9.0f;
    }
    std::fill(row(2), row(2) + n, 0.25f);  // all equal: 0
    std::fill(row(3), row(3) + n, -inf);   // all -inf: 0
    row(4)[0] = nan;                       // NaN first: 0, as on the CPU
    if (n > 2) row(5)[1] = nan;            // NaN elsewhere: ignored
    row(6)[n - 1] = 7.0f;                  // the last element
    if (n > 1) {                           // -0 and +0 compare equal
      std::fill(row(7), row(7) + n, -1.0f);
      row(7)[n - 1] = 0.0f;
      row(7)[n / 2] = -0.0f;
    }
    std::vector<int32_t> expected(kRows);
    for (int64_t r = 0; r < kRows; ++r) {
      expected[r] = ArgMax(absl::MakeConstSpan(&*row(r), n));
    }
    DeviceBuffer<float> dl = Upload(logits);
    DeviceBuffer<int32_t> dout;
    ASSERT_TRUE(dout.Reserve(kRows).ok());
    ExpectRan(ArgMaxRows(dl.data(), kRows, n, dout.data(), nullptr));
    EXPECT_TRUE(BitsEqual(Download(dout.data(), kRows), expected));
  }
}

// ---------------------------------------------------------------------------
// SampleRows

// Sampler::Sample (core/sampling.cc) after the repetition penalty, with the
// uniform number `u` given.
int32_t ReferenceSample(std::vector<float> logits, float temperature, int top_k,
                        float top_p, double u) {
  if (temperature == 0.0f) return ArgMax(logits);
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t keep = ids.size();
  if (top_k > 0 && static_cast<size_t>(top_k) < keep) {
    keep = top_k;
    std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), better);
    ids.resize(keep);
  } else {
    std::sort(ids.begin(), ids.end(), better);
  }
  std::vector<double> probs(keep);
  const double inv_t = 1.0 / static_cast<double>(temperature);
  const double best = logits[ids[0]];
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) {
    const double diff = logits[ids[i]] - best;
    probs[i] = diff == 0 ? 1.0 : std::exp(diff * inv_t);
    mass += probs[i];
  }
  for (size_t i = 0; i < keep; ++i) probs[i] /= mass;
  if (top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += probs[n++];
      if (cum >= top_p) break;
    }
    keep = n;
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += probs[i];
    for (size_t i = 0; i < keep; ++i) probs[i] /= total;
  }
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += probs[i];
    if (u < cum) return ids[i];
  }
  return ids[keep - 1];
}

// The uniform number of Sampler's first step for `seed` (its SplitMix64,
// core/sampling.cc UniformForStep with step 0).
double SamplerFirstUniform(uint64_t seed) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

struct SampleSetting {
  float temperature;
  int top_k;
  float top_p;
};

// Greedy, plain, top-k, top-p, both, a tiny and a large temperature, top-k
// of 1, a top-p that keeps one token, top-k beyond the row.
constexpr SampleSetting kSampleSettings[] = {
    {0.0f, 0, 1.0f},        {0.7f, 0, 1.0f},  {1.0f, 50, 1.0f},
    {0.8f, 0, 0.9f},        {1.3f, 40, 0.8f}, {1e-3f, 0, 1.0f},
    {5.0f, 0, 1.0f},        {1.0f, 1, 1.0f},  {1.0f, 0, 1e-6f},
    {0.9f, 1 << 20, 0.95f}, {0.0f, 5, 0.5f},  {2.0f, 3, 0.99f},
};

// Runs SampleRows on `logits` [rows, n] with per-row settings and u, and
// expects the reference's token for every row.
void ExpectSamplesMatch(const std::vector<float>& logits, int64_t rows,
                        int64_t n, const std::vector<SampleSetting>& settings,
                        const std::vector<double>& u) {
  std::vector<float> temperature(rows), top_p(rows);
  std::vector<int32_t> top_k(rows), expected(rows);
  for (int64_t r = 0; r < rows; ++r) {
    temperature[r] = settings[r].temperature;
    top_k[r] = settings[r].top_k;
    top_p[r] = settings[r].top_p;
    expected[r] =
        ReferenceSample(std::vector<float>(logits.begin() + r * n,
                                           logits.begin() + (r + 1) * n),
                        temperature[r], top_k[r], top_p[r], u[r]);
  }
  DeviceBuffer<float> dl = Upload(logits);
  DeviceBuffer<float> dt = Upload(temperature);
  DeviceBuffer<int32_t> dk = Upload(top_k);
  DeviceBuffer<float> dp = Upload(top_p);
  DeviceBuffer<double> du = Upload(u);
  DeviceBuffer<int32_t> dout;
  ASSERT_TRUE(dout.Reserve(rows).ok());
  ExpectRan(SampleRows(dl.data(), rows, n, dt.data(), dk.data(), dp.data(),
                       du.data(), dout.data(), nullptr));
  const std::vector<int32_t> actual = Download(dout.data(), rows);
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(actual[r], expected[r])
        << "row " << r << " (n " << n << ", T " << temperature[r] << ", top_k "
        << top_k[r] << ", top_p " << top_p[r] << ", u " << u[r] << ")";
  }
}

TEST(CudaKernelsTest, ReferenceSampleIsTheSampler) {
  MOE_SKIP_WITHOUT_GPU();
  // The reference above is Sampler::Sample given its u: checked here
  // against the real Sampler, so that the GPU tests below compare with it.
  std::mt19937 rng(16);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (const SampleSetting& s : kSampleSettings) {
    for (uint64_t seed = 1; seed <= 20; ++seed) {
      std::vector<float> logits(1000);
      for (float& l : logits) l = normal(rng);
      Sampler sampler({s.temperature, s.top_k, s.top_p, 1.0f, seed});
      std::vector<float> scratch = logits;
      const int32_t from_sampler =
          sampler.Sample(absl::MakeSpan(scratch), absl::Span<const int32_t>());
      EXPECT_EQ(from_sampler,
                ReferenceSample(logits, s.temperature, s.top_k, s.top_p,
                                SamplerFirstUniform(seed)))
          << "seed " << seed;
    }
  }
}

TEST(CudaKernelsTest, SampleRowsMatchesSamplerOnRandomLogits) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const int64_t rows = std::size(kSampleSettings);
  for (const int64_t n : {1, 2, 50, 513, 1000, 4097, 32000, 151936, 262144}) {
    SCOPED_TRACE(absl::StrCat("n ", n));
    for (int round = 0; round < 3; ++round) {
      std::vector<float> logits(rows * n);
      for (float& l : logits) l = normal(rng);
      std::vector<double> u(rows);
      for (double& x : u) x = uniform(rng);
      ExpectSamplesMatch(logits, rows, n,
                         std::vector<SampleSetting>(std::begin(kSampleSettings),
                                                    std::end(kSampleSettings)),
                         u);
    }
  }
}

TEST(CudaKernelsTest, SampleRowsMatchesSamplerWithTiesAndExtremeU) {
  MOE_SKIP_WITHOUT_GPU();
  // Logits on four levels: long runs of equal logits, so the order within
  // a tie (lower id first) decides the token. u sweeps [0, 1) including 0
  // and the largest double below 1; top_k cuts through tie groups; top_p
  // values are kept off the exact cumulative boundaries.
  std::mt19937 rng(18);
  std::uniform_int_distribution<int> level(0, 3);
  const float levels[] = {-1.0f, 0.0f, 0.5f, 2.0f};
  const double largest_below_one = std::nextafter(1.0, 0.0);
  const SampleSetting settings[] = {
      {1.0f, 0, 1.0f}, {0.5f, 7, 1.0f}, {1.0f, 0, 0.37f}, {2.0f, 13, 0.61f},
      {0.0f, 0, 1.0f}, {1.0f, 2, 1.0f}, {1.0f, 0, 1e-6f}};
  for (const int64_t n : {5, 64, 3000, 70001}) {
    SCOPED_TRACE(absl::StrCat("n ", n));
    std::vector<float> row(n);
    for (float& l : row) l = levels[level(rng)];
    row[n / 2] = -0.0f;  // equal to +0.0: ordered by id with them
    constexpr int kDraws = 21;
    std::vector<float> logits;
    std::vector<SampleSetting> per_row;
    std::vector<double> u;
    for (const SampleSetting& s : settings) {
      for (int d = 0; d < kDraws; ++d) {
        logits.insert(logits.end(), row.begin(), row.end());
        per_row.push_back(s);
        u.push_back(d == 0            ? 0.0
                    : d == kDraws - 1 ? largest_below_one
                                      : (d + 0.123) / kDraws);
      }
    }
    ExpectSamplesMatch(logits, static_cast<int64_t>(per_row.size()), n, per_row,
                       u);
  }
}

TEST(CudaKernelsTest, SampleRowsSortsLargeBatchesInChunks) {
  MOE_SKIP_WITHOUT_GPU();
  // 30 rows of a 151936-token vocabulary: more than one sort chunk.
  std::mt19937 rng(19);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  constexpr int64_t kRows = 30;
  constexpr int64_t kVocab = 151936;
  std::vector<float> logits(kRows * kVocab);
  for (float& l : logits) l = normal(rng);
  std::vector<SampleSetting> settings;
  std::vector<double> u;
  for (int64_t r = 0; r < kRows; ++r) {
    settings.push_back(kSampleSettings[r % std::size(kSampleSettings)]);
    u.push_back(uniform(rng));
  }
  ExpectSamplesMatch(logits, kRows, kVocab, settings, u);
}

TEST(CudaKernelsTest, SampleRowsRejectsAVocabularyAboveTheLimit) {
  MOE_SKIP_WITHOUT_GPU();
  const absl::Status status = SampleRows(nullptr, 1, 262145, nullptr, nullptr,
                                         nullptr, nullptr, nullptr, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}


}  // namespace
}  // namespace moe::cuda
