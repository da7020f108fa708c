// Tests of core/cpu/kernels.h and core/thread_pool.h against plain
// double-precision references written here.
#include "core/cpu/kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/kernel_test_util.h"

namespace moe::cpu {
namespace {

using ::moe::testing::OwnedTensor;
using ::moe::testing::RandomValues;

// Written into output padding; must survive every kernel call.
constexpr float kSentinel = -12345.5f;

// ---------------------------------------------------------------------------
// MatMul

// y[r, c] = sum_i x[r, i] * w[c, i] in double, plus the bound
// sum_i |x[r, i]| |w[c, i]| that scales the float32 rounding error.
struct MatMulRef {
  std::vector<double> y;
  std::vector<double> abs_sum;
};

MatMulRef ReferenceMatMul(const float* x, int64_t m, int64_t ldx,
                          const OwnedTensor& w) {
  const int64_t n = w.view().rows(), k = w.view().cols();
  MatMulRef ref;
  ref.y.assign(m * n, 0.0);
  ref.abs_sum.assign(m * n, 0.0);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      double s = 0, a = 0;
      for (int64_t i = 0; i < k; ++i) {
        const double p = static_cast<double>(x[r * ldx + i]) * w.At(c * k + i);
        s += p;
        a += std::fabs(p);
      }
      ref.y[r * n + c] = s;
      ref.abs_sum[r * n + c] = a;
    }
  }
  return ref;
}

// Checks y (row stride ldy) against the reference within
// rel * sum |x||w|, and the padding columns [n, ldy) still hold kSentinel.
void ExpectMatMulNear(const float* y, int64_t m, int64_t n, int64_t ldy,
                      const MatMulRef& ref, double rel,
                      const std::string& what) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      const double want = ref.y[r * n + c];
      const double tol = rel * ref.abs_sum[r * n + c] + 1e-30;
      ASSERT_NEAR(y[r * ldy + c], want, tol)
          << what << " row " << r << " col " << c;
    }
    for (int64_t c = n; c < ldy; ++c) {
      ASSERT_EQ(y[r * ldy + c], kSentinel) << what << " padding col " << c;
    }
  }
}

constexpr double kMatMulTolerance = 1e-5;

struct MatMulParam {
  DType dtype;
  bool avx512;
  int threads;
};

std::string ParamName(const ::testing::TestParamInfo<MatMulParam>& info) {
  return absl::StrCat(DTypeName(info.param.dtype),
                      info.param.avx512 ? "_avx512" : "_portable", "_",
                      info.param.threads, "threads");
}

class MatMulTest : public ::testing::TestWithParam<MatMulParam> {
 protected:
  void SetUp() override {
    saved_avx512_ = HasAvx512MatMul();
    SetAvx512MatMulEnabled(GetParam().avx512);
    if (GetParam().avx512 && !HasAvx512MatMul()) {
      GTEST_SKIP() << "this CPU has no AVX-512";
    }
    ASSERT_EQ(HasAvx512MatMul(), GetParam().avx512);
    pool_ = std::make_unique<ThreadPool>(GetParam().threads);
  }
  void TearDown() override { SetAvx512MatMulEnabled(saved_avx512_); }

  OwnedTensor RandomWeight(int64_t n, int64_t k) {
    return OwnedTensor(GetParam().dtype, {n, k}, RandomValues(n * k, rng_));
  }

  bool saved_avx512_ = false;
  std::unique_ptr<ThreadPool> pool_;
  std::mt19937 rng_{2024};
};

TEST_P(MatMulTest, AllShapes) {
  const int64_t ms[] = {1, 2, 3, 4, 5, 7, 8, 16, 33};
  const int64_t ns[] = {1, 15, 16, 17, 64, 100};
  const int64_t ks[] = {1, 15, 16, 31, 32, 33, 64, 100, 1024};
  for (int64_t n : ns) {
    for (int64_t k : ks) {
      const OwnedTensor w = RandomWeight(n, k);
      for (int64_t m : ms) {
        const std::string what = absl::StrCat("m=", m, " n=", n, " k=", k);
        // Dense rows through the convenience overload.
        const std::vector<float> x = RandomValues(m * k, rng_);
        std::vector<float> y(m * n, kSentinel);
        MatMul(x.data(), m, w.view(), y.data(), pool_.get());
        const MatMulRef ref = ReferenceMatMul(x.data(), m, k, w);
        ExpectMatMulNear(y.data(), m, n, n, ref, kMatMulTolerance, what);
        if (HasFatalFailure()) return;

        // Strided rows through a job.
        const int64_t ldx = k + 3, ldy = n + 5;
        std::vector<float> xs(m * ldx, 1e6f);  // padding must not be read
        for (int64_t r = 0; r < m; ++r) {
          std::copy(x.begin() + r * k, x.begin() + (r + 1) * k,
                    xs.begin() + r * ldx);
        }
        std::vector<float> ys(m * ldy, kSentinel);
        const MatMulJob job{xs.data(), m, ldx, &w.view(), ys.data(), ldy};
        MatMul(absl::MakeConstSpan(&job, 1), pool_.get());
        ExpectMatMulNear(ys.data(), m, n, ldy, ref, kMatMulTolerance,
                         what + " strided");
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_P(MatMulTest, PrefillSizedBatches) {
  for (int64_t n : {17, 64}) {
    for (int64_t k : {33, 256}) {
      const OwnedTensor w = RandomWeight(n, k);
      for (int64_t m : {64, 130}) {
        const std::vector<float> x = RandomValues(m * k, rng_);
        std::vector<float> y(m * n, kSentinel);
        MatMul(x.data(), m, w.view(), y.data(), pool_.get());
        ExpectMatMulNear(y.data(), m, n, n, ReferenceMatMul(x.data(), m, k, w),
                         kMatMulTolerance,
                         absl::StrCat("m=", m, " n=", n, " k=", k));
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_P(MatMulTest, ExtremeWeightValuesWidenExactly) {
  // Subnormal, huge, tiny and signed-zero weights of the stored dtype,
  // against one-hot inputs: y picks single weights out, which must be
  // exactly the stored value widened.
  std::vector<float> values;
  switch (GetParam().dtype) {
    case DType::kF16:
      values = {std::ldexp(1.0f, -24),
                -std::ldexp(3.0f, -24),
                65504.0f,
                -65504.0f,
                std::ldexp(1023.0f, -24),
                -0.0f,
                1.0f,
                0.5f};
      break;
    case DType::kBF16:
      values = {std::ldexp(1.0f, -133),
                3.0e38f,
                -3.0e38f,
                1e-38f,
                -0.0f,
                1.0f,
                0.5f,
                -2.0f};
      break;
    case DType::kF32:
      values = {std::ldexp(1.0f, -149),
                3.0e38f,
                -3.0e38f,
                1e-38f,
                -0.0f,
                1.0f,
                0.5f,
                -2.0f};
      break;
  }
  const int64_t n = 3, k = 37;  // 111 weights: values repeated
  std::vector<float> wv(n * k);
  for (int64_t i = 0; i < n * k; ++i) wv[i] = values[i % values.size()];
  const OwnedTensor w(GetParam().dtype, {n, k}, wv);
  // Row r of x is one-hot at column r.
  const int64_t m = k;
  std::vector<float> x(m * k, 0.0f);
  for (int64_t r = 0; r < m; ++r) x[r * k + r] = 1.0f;
  std::vector<float> y(m * n, kSentinel);
  MatMul(x.data(), m, w.view(), y.data(), pool_.get());
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      ASSERT_EQ(y[r * n + c], static_cast<float>(w.At(c * k + r)))
          << "row " << r << " col " << c;
    }
  }
}

TEST_P(MatMulTest, ManyJobsInOneCall) {
  // Like q/k/v or many experts' gate/up: different weights (and dtypes),
  // inputs and strides, some writing side by side into one output buffer.
  struct Spec {
    DType dtype;
    int64_t n, k, m, ldx;
  };
  const Spec specs[] = {
      {GetParam().dtype, 17, 33, 3, 40},  {DType::kBF16, 64, 100, 1, 100},
      {DType::kF16, 5, 1024, 7, 1030},    {DType::kF32, 100, 16, 3, 16},
      {GetParam().dtype, 16, 64, 0, 64},  // no rows: nothing to do
      {GetParam().dtype, 31, 64, 33, 70},
  };
  std::vector<OwnedTensor> weights;
  std::vector<std::vector<float>> xs;
  for (const Spec& s : specs) {
    weights.emplace_back(s.dtype, std::vector<int64_t>{s.n, s.k},
                         RandomValues(s.n * s.k, rng_));
    xs.push_back(RandomValues(std::max<int64_t>(1, s.m * s.ldx), rng_));
  }
  // Jobs 0 and 3 (m = 3 each) share one output of width 17 + 100 + 4 pad.
  const int64_t shared_ld = 17 + 100 + 4;
  std::vector<float> shared(3 * shared_ld, kSentinel);
  std::vector<std::vector<float>> own(std::size(specs));
  std::vector<MatMulJob> jobs;
  for (size_t j = 0; j < std::size(specs); ++j) {
    const Spec& s = specs[j];
    MatMulJob job{xs[j].data(), s.m, s.ldx, &weights[j].view(), nullptr, 0};
    if (j == 0) {
      job.y = shared.data();
      job.ldy = shared_ld;
    } else if (j == 3) {
      job.y = shared.data() + 17;
      job.ldy = shared_ld;
    } else {
      own[j].assign(std::max<int64_t>(1, s.m * (s.n + 2)), kSentinel);
      job.y = own[j].data();
      job.ldy = s.n + 2;
    }
    jobs.push_back(job);
  }
  MatMul(jobs, pool_.get());

  for (size_t j = 0; j < std::size(specs); ++j) {
    if (j == 0 || j == 3) continue;
    const Spec& s = specs[j];
    const MatMulRef ref = ReferenceMatMul(xs[j].data(), s.m, s.ldx, weights[j]);
    ExpectMatMulNear(own[j].data(), s.m, s.n, s.n + 2, ref, kMatMulTolerance,
                     absl::StrCat("job ", j));
  }
  EXPECT_EQ(own[4][0], kSentinel) << "an m = 0 job wrote output";
  // The shared buffer: columns [0, 17) from job 0, [17, 117) from job 3,
  // padding [117, 121) untouched.
  const MatMulRef ref0 = ReferenceMatMul(xs[0].data(), 3, 40, weights[0]);
  const MatMulRef ref3 = ReferenceMatMul(xs[3].data(), 3, 16, weights[3]);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t c = 0; c < 17; ++c) {
      EXPECT_NEAR(shared[r * shared_ld + c], ref0.y[r * 17 + c],
                  kMatMulTolerance * ref0.abs_sum[r * 17 + c]);
    }
    for (int64_t c = 0; c < 100; ++c) {
      EXPECT_NEAR(shared[r * shared_ld + 17 + c], ref3.y[r * 100 + c],
                  kMatMulTolerance * ref3.abs_sum[r * 100 + c]);
    }
    for (int64_t c = 117; c < shared_ld; ++c) {
      EXPECT_EQ(shared[r * shared_ld + c], kSentinel);
    }
  }
}

TEST_P(MatMulTest, RepeatedCallsGiveIdenticalResults) {
  const OwnedTensor w = RandomWeight(100, 64);
  const std::vector<float> x = RandomValues(5 * 64, rng_);
  std::vector<float> first(5 * 100);
  MatMul(x.data(), 5, w.view(), first.data(), pool_.get());
  for (int i = 0; i < 200; ++i) {
    std::vector<float> y(5 * 100, kSentinel);
    MatMul(x.data(), 5, w.view(), y.data(), pool_.get());
    ASSERT_EQ(y, first) << "call " << i;
  }
}

// Each output must not depend on how the columns were split across threads
// (tile widths differ at chunk edges): the cluster relies on expert servers
// with other thread counts producing bit-identical results to the engine.
TEST_P(MatMulTest, ResultsDoNotDependOnTheThreadCount) {
  for (int64_t n : {17, 100, 333}) {
    for (int64_t m : {1, 3, 5}) {
      const OwnedTensor w = RandomWeight(n, 96);
      const std::vector<float> x = RandomValues(m * 96, rng_);
      std::vector<float> serial(m * n);
      MatMul(x.data(), m, w.view(), serial.data(), nullptr);
      for (int threads : {2, 3, 5}) {
        ThreadPool pool(threads);
        std::vector<float> y(m * n, kSentinel);
        MatMul(x.data(), m, w.view(), y.data(), &pool);
        ASSERT_EQ(y, serial) << "n=" << n << " m=" << m << " threads=" << threads;
      }
    }
  }
}

TEST_P(MatMulTest, ReferenceMatchesDoublePrecision) {
  for (int64_t k : {1, 33, 1024}) {
    const OwnedTensor w = RandomWeight(17, k);
    const std::vector<float> x = RandomValues(3 * (k + 1), rng_);
    std::vector<float> y(3 * 20, kSentinel);
    const MatMulJob job{x.data(), 3, k + 1, &w.view(), y.data(), 20};
    MatMulReference(job);
    const MatMulRef ref = ReferenceMatMul(x.data(), 3, k + 1, w);
    // Accumulated in double: only the final rounding to float remains.
    for (int64_t r = 0; r < 3; ++r) {
      for (int64_t c = 0; c < 17; ++c) {
        const double want = ref.y[r * 17 + c];
        EXPECT_NEAR(y[r * 20 + c], want,
                    std::fabs(want) * 1.2e-7 + 1e-12 * ref.abs_sum[r * 17 + c])
            << "k=" << k << " r=" << r << " c=" << c;
      }
      for (int64_t c = 17; c < 20; ++c) EXPECT_EQ(y[r * 20 + c], kSentinel);
    }
  }
}

std::vector<MatMulParam> AllMatMulParams() {
  std::vector<MatMulParam> out;
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (bool avx : {false, true}) {
      for (int threads : {1, 2, 3}) out.push_back({d, avx, threads});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllPaths, MatMulTest,
                         ::testing::ValuesIn(AllMatMulParams()), ParamName);

TEST(MatMulSwitchTest, DisablingAvx512Sticks) {
  const bool saved = HasAvx512MatMul();
  SetAvx512MatMulEnabled(false);
  EXPECT_FALSE(HasAvx512MatMul());
  SetAvx512MatMulEnabled(true);
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool cpu_has = __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl");
  EXPECT_EQ(HasAvx512MatMul(), cpu_has);
#endif
  SetAvx512MatMulEnabled(saved);
}

// ---------------------------------------------------------------------------
// RmsNorm

void CheckRmsNorm(DType wdtype, int64_t m, int64_t n, int64_t ld, float eps,
                  bool in_place, std::mt19937& rng) {
  SCOPED_TRACE(absl::StrCat(DTypeName(wdtype), " m=", m, " n=", n, " ld=", ld,
                            " eps=", eps, in_place ? " in place" : ""));
  const OwnedTensor w(wdtype, {n}, RandomValues(n, rng, 0.5f, 1.5f));
  std::vector<float> x = RandomValues(m * ld, rng, -3.0f, 3.0f);
  if (m > 1) std::fill(x.begin() + ld, x.begin() + ld + n, 0.0f);  // zero row
  const std::vector<float> x0 = x;
  std::vector<float> y(m * ld, kSentinel);
  float* out = in_place ? x.data() : y.data();
  RmsNorm(x.data(), m, n, ld, w.view(), eps, out);
  for (int64_t r = 0; r < m; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i)
      ss += double{x0[r * ld + i]} * x0[r * ld + i];
    const double inv = 1.0 / std::sqrt(ss / n + eps);
    for (int64_t i = 0; i < n; ++i) {
      const double want = x0[r * ld + i] * inv * w.At(i);
      ASSERT_NEAR(out[r * ld + i], want, 1e-6 * std::fabs(want) + 1e-7)
          << "row " << r << " col " << i;
    }
    for (int64_t i = n; i < ld; ++i) {
      // Columns past n are neither read into the norm nor written.
      ASSERT_EQ(out[r * ld + i], in_place ? x0[r * ld + i] : kSentinel);
    }
  }
}

TEST(RmsNormTest, MatchesReference) {
  std::mt19937 rng(7);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (bool in_place : {false, true}) {
      CheckRmsNorm(d, 3, 64, 64, 1e-5f, in_place, rng);
      CheckRmsNorm(d, 4, 64, 80, 1e-6f, in_place, rng);
      CheckRmsNorm(d, 1, 1, 1, 1e-5f, in_place, rng);
      CheckRmsNorm(d, 5, 100, 131, 1e-5f, in_place, rng);
    }
  }
}

TEST(RmsNormTest, EpsilonMatters) {
  // A tiny row: eps dominates the mean square.
  const OwnedTensor w(DType::kF32, {4}, {1, 1, 1, 1});
  std::vector<float> x = {1e-3f, -1e-3f, 1e-3f, -1e-3f};
  std::vector<float> y(4);
  RmsNorm(x.data(), 1, 4, 4, w.view(), 1e-2f, y.data());
  const double want = 1e-3 / std::sqrt(1e-6 + 1e-2);
  EXPECT_NEAR(y[0], want, 1e-6 * want);
  EXPECT_NEAR(y[1], -want, 1e-6 * want);
}

// ---------------------------------------------------------------------------
// ApplyRope

// Rotate-half RoPE in double: pair (i, i + d/2) of each head rotated by
// pos * theta^(-2i/d).
void CheckRope(int64_t heads, int64_t head_dim, int64_t ld,
               const std::vector<int32_t>& positions, double theta,
               std::mt19937& rng) {
  SCOPED_TRACE(absl::StrCat("heads=", heads, " d=", head_dim, " ld=", ld,
                            " theta=", theta));
  const int64_t tokens = positions.size();
  std::vector<float> x = RandomValues(tokens * ld, rng);
  const std::vector<float> x0 = x;
  ApplyRope(x.data(), tokens, ld, heads, head_dim, positions.data(), theta);
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = t * ld + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const double angle =
            positions[t] * std::pow(theta, -2.0 * i / head_dim);
        const double a = x0[base + i], b = x0[base + i + half];
        const double want_a = a * std::cos(angle) - b * std::sin(angle);
        const double want_b = b * std::cos(angle) + a * std::sin(angle);
        // Hugging Face forms the angle and its cos/sin in float32, so the
        // angle carries a relative error of a few float32 ulps.
        const double tol =
            (std::fabs(a) + std::fabs(b)) *
            (1e-6 + 4 * angle * std::numeric_limits<float>::epsilon());
        ASSERT_NEAR(x[base + i], want_a, tol)
            << "pos " << positions[t] << " head " << h << " i " << i;
        ASSERT_NEAR(x[base + i + half], want_b, tol)
            << "pos " << positions[t] << " head " << h << " i " << i + half;
      }
    }
    for (int64_t c = heads * head_dim; c < ld; ++c) {
      ASSERT_EQ(x[t * ld + c], x0[t * ld + c])
          << "column " << c << " beyond the heads";
    }
  }
}

TEST(RopeTest, MatchesExplicitFormula) {
  std::mt19937 rng(11);
  const std::vector<int32_t> positions = {0, 1, 2, 7, 16, 100, 1000, 4095, 3};
  for (double theta : {1e4, 1e6}) {
    CheckRope(1, 2, 2, positions, theta, rng);
    CheckRope(4, 16, 64, positions, theta, rng);
    CheckRope(3, 8, 30, positions, theta, rng);  // trailing columns
    CheckRope(2, 64, 128, positions, theta, rng);
    CheckRope(2, 128, 260, positions, theta, rng);
  }
}

TEST(RopeTest, PositionZeroIsIdentityAndNormsArePreserved) {
  std::mt19937 rng(12);
  std::vector<float> x = RandomValues(2 * 32, rng);
  const std::vector<float> x0 = x;
  const int32_t positions[] = {0, 37};
  ApplyRope(x.data(), 2, 32, 2, 16, positions, 1e4);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(x[i], x0[i]);
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 8; ++i) {
      const int a = 32 + h * 16 + i, b = a + 8;
      const double before = std::hypot(x0[a], x0[b]);
      EXPECT_NEAR(std::hypot(x[a], x[b]), before, 1e-6 * before + 1e-7);
    }
  }
  // The first pair rotates by exactly pos radians (theta^0 = 1).
  EXPECT_NEAR(x[32], x0[32] * std::cos(37.0) - x0[40] * std::sin(37.0), 1e-5);
}

// ---------------------------------------------------------------------------
// Elementwise

TEST(SiluMulTest, MatchesReference) {
  std::mt19937 rng(13);
  std::vector<float> gate = RandomValues(1000, rng, -20.0f, 20.0f);
  std::vector<float> up = RandomValues(1000, rng, -3.0f, 3.0f);
  const float extremes[] = {-100.0f, 100.0f, 0.0f, -88.0f, 88.0f, -1e-8f};
  std::copy(std::begin(extremes), std::end(extremes), gate.begin());
  std::vector<float> out(1000, kSentinel);
  SiluMul(gate.data(), up.data(), out.data(), 999);
  for (int i = 0; i < 999; ++i) {
    const double g = gate[i];
    const double want = g / (1.0 + std::exp(-g)) * up[i];
    ASSERT_NEAR(out[i], want, 1e-6 * std::fabs(want) + 1e-37) << "gate " << g;
  }
  EXPECT_EQ(out[999], kSentinel);
  // In place over the gate, as the expert FFN uses it.
  std::vector<float> in_place = gate;
  SiluMul(in_place.data(), up.data(), in_place.data(), 1000);
  for (int i = 0; i < 1000; ++i) {
    const double g = gate[i];
    const double want = g / (1.0 + std::exp(-g)) * up[i];
    ASSERT_NEAR(in_place[i], want, 1e-6 * std::fabs(want) + 1e-37)
        << "gate " << g;
  }
}

std::vector<double> SoftmaxRef(const std::vector<float>& x) {
  double max = -INFINITY;
  for (float v : x) max = std::max<double>(max, v);
  std::vector<double> p(x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) sum += p[i] = std::exp(x[i] - max);
  for (double& v : p) v /= sum;
  return p;
}

void ExpectSoftmax(std::vector<float> x) {
  const std::vector<double> want = SoftmaxRef(x);
  Softmax(x.data(), x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(x[i])) << i;
    ASSERT_NEAR(x[i], want[i], 1e-6 * want[i] + 1e-9) << i;
    sum += x[i];
  }
  EXPECT_NEAR(sum, 1.0, 1e-5);
}

TEST(SoftmaxTest, MatchesReference) {
  std::mt19937 rng(14);
  ExpectSoftmax(RandomValues(100, rng, -5.0f, 5.0f));
  ExpectSoftmax(RandomValues(7, rng, -30.0f, 30.0f));
  ExpectSoftmax({3.0f});
  ExpectSoftmax({2.0f, 2.0f, 2.0f, 2.0f});
}

TEST(SoftmaxTest, LargeValuesDoNotOverflow) {
  ExpectSoftmax({1000.0f, 1001.0f, 1002.0f});
  ExpectSoftmax({-1000.0f, -1001.0f, -999.0f});
  ExpectSoftmax({88.0f, 89.0f, 3e38f, -3e38f});
  std::vector<float> x = {1e30f, 0.0f};
  Softmax(x.data(), 2);
  EXPECT_EQ(x[0], 1.0f);
  EXPECT_EQ(x[1], 0.0f);
}

TEST(SoftmaxTest, MinusInfinityGetsZero) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {-inf, 0.0f, -inf, std::log(3.0f)};
  Softmax(x.data(), 4);
  EXPECT_EQ(x[0], 0.0f);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_NEAR(x[1], 0.25, 1e-7);
  EXPECT_NEAR(x[3], 0.75, 1e-7);
}

TEST(SigmoidTest, MatchesReference) {
  for (float v : {-1000.0f, -100.0f, -20.0f, -3.5f, -1.0f, -1e-6f, 0.0f, 1e-6f,
                  0.5f, 2.0f, 20.0f, 100.0f, 1000.0f}) {
    const double want = 1.0 / (1.0 + std::exp(-static_cast<double>(v)));
    const float got = Sigmoid(v);
    ASSERT_FALSE(std::isnan(got)) << v;
    EXPECT_NEAR(got, want, 1e-6 * want + 1e-7) << v;
  }
  EXPECT_EQ(Sigmoid(0.0f), 0.5f);
}

TEST(ClampTest, ClampsBothSides) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {-5.0f, -2.0f, -1.5f, 0.0f, 1.5f,
                          2.0f,  7.0f,  inf,   -inf, 9.0f};
  Clamp(x.data(), 9, 2.0f);
  const std::vector<float> want = {-2.0f, -2.0f, -1.5f, 0.0f,  1.5f,
                                   2.0f,  2.0f,  2.0f,  -2.0f, 9.0f};
  EXPECT_EQ(x, want);
}

TEST(AddBiasTest, AddsToEachRowWithinItsWidth) {
  std::mt19937 rng(15);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    const OwnedTensor bias(d, {7}, RandomValues(7, rng));
    std::vector<float> y = RandomValues(3 * 10, rng);
    const std::vector<float> y0 = y;
    AddBias(y.data(), 3, 10, bias.view());
    for (int r = 0; r < 3; ++r) {
      for (int i = 0; i < 7; ++i) {
        EXPECT_EQ(y[r * 10 + i],
                  y0[r * 10 + i] + static_cast<float>(bias.At(i)));
      }
      for (int i = 7; i < 10; ++i) EXPECT_EQ(y[r * 10 + i], y0[r * 10 + i]);
    }
  }
}

// ---------------------------------------------------------------------------
// ThreadPool

TEST(ThreadPoolTest, NumThreads) {
  EXPECT_EQ(ThreadPool(1).num_threads(), 1);
  EXPECT_EQ(ThreadPool(3).num_threads(), 3);
  EXPECT_GE(ThreadPool(0).num_threads(), 1);
}

TEST(ThreadPoolTest, EverySpinSettingAndParkingStillRunsEveryChunk) {
  for (int spin_us : {0, 10, 100}) {
    ThreadPool pool(3, spin_us);
    for (int round = 0; round < 50; ++round) {
      std::vector<std::atomic<int>> hits(257);
      pool.ParallelFor(257, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
      });
      for (const std::atomic<int>& h : hits) ASSERT_EQ(h.load(), 1);
      // Parked workers sleep at once; the next dispatch must wake them.
      if (round % 2 == 0) pool.Park();
      if (round % 5 == 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
  }
}

TEST(ThreadPoolTest, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 7, 8, 15, 64, 100, 1000, 4097}) {
      for (int64_t min_chunk : {0, 1, 2, 3, 16, 1000, 5000}) {
        for (int repeat = 0; repeat < 5; ++repeat) {
          SCOPED_TRACE(absl::StrCat("threads=", threads, " n=", n,
                                    " min_chunk=", min_chunk));
          std::vector<std::atomic<int>> hits(n);
          std::mutex mu;
          std::vector<std::pair<int64_t, int64_t>> chunks;
          pool.ParallelFor(n, min_chunk, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
            std::lock_guard<std::mutex> lock(mu);
            chunks.push_back({begin, end});
          });
          for (int64_t i = 0; i < n; ++i) {
            ASSERT_EQ(hits[i].load(), 1) << "index " << i;
          }
          // Contiguous, non-empty chunks; all but the last at least
          // min_chunk long.
          std::sort(chunks.begin(), chunks.end());
          int64_t next = 0;
          for (size_t c = 0; c < chunks.size(); ++c) {
            ASSERT_EQ(chunks[c].first, next);
            ASSERT_LT(chunks[c].first, chunks[c].second);
            if (chunks[c].second != n) {
              ASSERT_GE(chunks[c].second - chunks[c].first, min_chunk);
            }
            next = chunks[c].second;
          }
          ASSERT_EQ(next, n);
        }
      }
    }
  }
}

TEST(ThreadPoolTest, ManyQuickDispatches) {
  ThreadPool pool(3);
  std::vector<int64_t> data(257);
  for (int round = 0; round < 3000; ++round) {
    pool.ParallelFor(257, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) data[i] += i;
    });
  }
  for (int64_t i = 0; i < 257; ++i) ASSERT_EQ(data[i], 3000 * i) << i;
}

TEST(ThreadPoolTest, ReturnsOnlyWhenAllChunksAreDone) {
  ThreadPool pool(3);
  for (int round = 0; round < 200; ++round) {
    std::atomic<int64_t> done{0};
    pool.ParallelFor(64, 1, [&](int64_t begin, int64_t end) {
      if (begin % 3 == 0) std::this_thread::yield();
      done.fetch_add(end - begin);
    });
    ASSERT_EQ(done.load(), 64) << "round " << round;
  }
}

}  // namespace
}  // namespace moe::cpu
