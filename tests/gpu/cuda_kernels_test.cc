// The CUDA kernels of core/cuda/kernels.h against the CPU backend on random
// data: cpu::RmsNorm, cpu::ApplyRope, cpu::SiluMul, cpu::AddBias,
// cpu::Clamp, cpu::Sigmoid, RouteFromLogits, ArgMax and Sampler::Sample
// (reproduced with a known uniform u, and checked against the real Sampler
// with the u of its seed), plus the combine of LocalMoeExecutor.
//
// Tolerances, and why:
// - Bit-exact: AddBias, Clamp, AddInPlace, ToBf16, FromBf16, Embed,
//   GatherRowsToBf16, ArgMaxRows, the expert ids of TopKGating and every
//   token of SampleRows. These are single IEEE operations, conversions or
//   comparisons the GPU does exactly as the CPU (SampleRows: the sums of
//   its probabilities are tree- rather than sequence-ordered, which could
//   only matter for a u within ~1e-15 of a cumulative boundary; random u
//   and the boundaries chosen here stay clear of that).
// - RmsNorm: 1e-5 relative. The mean of squares accumulates in float32 on
//   the GPU (double on the CPU); the rest is the same float arithmetic.
// - RmsNormToBf16, SiluMulToBf16: 2^-8 + 1e-5 relative to the CPU's float
//   result: half a BF16 ulp (the output rounding; the float values may
//   straddle a rounding boundary) plus the float32 difference.
// - ApplyRope: 1e-6 * (|a| + |b|) for the pair (a, b) it rotates. inv_freq
//   and the angles are the same floats; device sincosf is within 2 ulp and
//   glibc's within 1, about 2.4e-7 * (|a| + |b|) after the products.
// - AddSigmoidGated: 1e-6 * (|y| + |g x|): device expf in the sigmoid is
//   within 2 ulp of glibc's.
// - TopKGating weights: 2e-6 relative (device expf, tree-ordered double
//   sum, then up to 32 float additions for the renormalisation).
// - CombineExperts: 1e-6 * sum |w x|; the same additions in the same order
//   as the CPU executor, so bit-exact in practice.
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
// RmsNorm, RmsNormToBf16

struct RowShape {
  int64_t rows;
  int64_t n;
  int64_t ld;
};

// Vector and scalar paths (n or ld not a multiple of 4), padded strides,
// rows of one value, blocks of 32 to 1024 threads.
constexpr RowShape kRowShapes[] = {
    {3, 1000, 1000}, {4, 4096, 4096}, {2, 1, 1},       {5, 130, 136},
    {3, 4096, 4100}, {2, 4097, 4097}, {2, 8192, 8200}, {7, 33, 35},
};

TEST(CudaKernelsTest, RmsNormMatchesCpu) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(1);
  for (const RowShape& s : kRowShapes) {
    SCOPED_TRACE(absl::StrCat("rows ", s.rows, " n ", s.n, " ld ", s.ld));
    const std::vector<float> x = PaddedRows(s.rows, s.n, s.ld, rng);
    const OwnedTensor weight(DType::kBF16, {s.n},
                             RandomValues(s.n, rng, 0.5f, 1.5f));
    std::vector<float> expected = x;
    cpu::RmsNorm(x.data(), s.rows, s.n, s.ld, weight.view(), 1e-6f,
                 expected.data());

    DeviceBuffer<float> dx = Upload(x);
    DeviceBuffer<float> dy = Upload(x);  // padding: sentinels
    DeviceBuffer<bf16> dw = UploadTensor(weight);
    ExpectRan(RmsNorm(dx.data(), s.rows, s.n, s.ld, dw.data(), 1e-6f, dy.data(),
                      nullptr));
    EXPECT_TRUE(AllRelNear(Download(dy.data(), x.size()), expected, 1e-5));

    // In place.
    ExpectRan(RmsNorm(dx.data(), s.rows, s.n, s.ld, dw.data(), 1e-6f, dx.data(),
                      nullptr));
    EXPECT_TRUE(AllRelNear(Download(dx.data(), x.size()), expected, 1e-5));
  }
}

TEST(CudaKernelsTest, RmsNormToBf16MatchesCpuWithinBf16Rounding) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(2);
  for (const RowShape& s : kRowShapes) {
    SCOPED_TRACE(absl::StrCat("rows ", s.rows, " n ", s.n, " ld ", s.ld));
    const std::vector<float> x = PaddedRows(s.rows, s.n, s.ld, rng);
    const OwnedTensor weight(DType::kBF16, {s.n},
                             RandomValues(s.n, rng, 0.5f, 1.5f));
    std::vector<float> padded = x;
    cpu::RmsNorm(x.data(), s.rows, s.n, s.ld, weight.view(), 1e-5f,
                 padded.data());
    std::vector<float> expected(s.rows * s.n);  // dense rows
    for (int64_t r = 0; r < s.rows; ++r) {
      std::copy(padded.begin() + r * s.ld, padded.begin() + r * s.ld + s.n,
                expected.begin() + r * s.n);
    }

    DeviceBuffer<float> dx = Upload(x);
    DeviceBuffer<bf16> dw = UploadTensor(weight);
    DeviceBuffer<bf16> dy;
    ASSERT_TRUE(dy.Reserve(s.rows * s.n).ok());
    ExpectRan(RmsNormToBf16(dx.data(), s.rows, s.n, s.ld, dw.data(), 1e-5f,
                            dy.data(), nullptr));
    EXPECT_TRUE(AllRelNear(FromBf16Bits(DownloadBf16(dy.data(), s.rows * s.n)),
                           expected, kHalfBf16Ulp + 1e-5));
  }
}

TEST(CudaKernelsTest, RmsNormRejectsAStrideShorterThanTheRow) {
  MOE_SKIP_WITHOUT_GPU();
  const absl::Status status =
      RmsNorm(nullptr, 2, 8, 4, nullptr, 1e-6f, nullptr, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

// ---------------------------------------------------------------------------
// ApplyRope

struct RopeShape {
  int64_t tokens;
  int64_t heads;
  int64_t head_dim;
  int64_t ld;
  double theta;
};

TEST(CudaKernelsTest, ApplyRopeMatchesCpu) {
  MOE_SKIP_WITHOUT_GPU();
  // q heads followed by k/v values the kernel must leave alone (ld), small
  // and odd head_dims (the last value of an odd head stays), large thetas.
  const RopeShape shapes[] = {
      {3, 4, 128, 4 * 128 + 2 * 128, 1e6},
      {5, 2, 64, 128, 10000.0},
      {2, 3, 6, 20, 10000.0},
      {1, 1, 2, 2, 500000.0},
      {2, 2, 7, 15, 10000.0},
      {4, 32, 128, 32 * 128, 1e6},
      {1, 2, 512, 1024, 10000.0},
  };
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> position(0, 131071);
  for (const RopeShape& s : shapes) {
    SCOPED_TRACE(absl::StrCat("tokens ", s.tokens, " heads ", s.heads,
                              " head_dim ", s.head_dim, " ld ", s.ld));
    std::vector<float> x = RandomValues(s.tokens * s.ld, rng, -2.0f, 2.0f);
    std::vector<int32_t> positions(s.tokens);
    for (int32_t& p : positions) p = position(rng);
    positions[0] = 0;
    if (s.tokens > 1) positions[1] = 1;
    std::vector<float> expected = x;
    cpu::ApplyRope(expected.data(), s.tokens, s.ld, s.heads, s.head_dim,
                   positions.data(), s.theta);

    DeviceBuffer<float> dx = Upload(x);
    DeviceBuffer<int32_t> dpos = Upload(positions);
    ExpectRan(ApplyRope(dx.data(), s.tokens, s.ld, s.heads, s.head_dim,
                        dpos.data(), s.theta, nullptr));
    const std::vector<float> actual = Download(dx.data(), x.size());
    // Tolerance from the rotated pair's inputs; 0 outside the pairs.
    const int64_t half = s.head_dim / 2;
    std::vector<double> tolerance(x.size(), 0.0);
    for (int64_t t = 0; t < s.tokens; ++t) {
      for (int64_t h = 0; h < s.heads; ++h) {
        const int64_t base = t * s.ld + h * s.head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const double tol =
              1e-6 * (std::fabs(x[base + i]) + std::fabs(x[base + i + half]));
          tolerance[base + i] = tolerance[base + i + half] = tol;
        }
      }
    }
    EXPECT_TRUE(
        AllNear(actual, expected, [&](size_t i) { return tolerance[i]; }));
  }
}

// ---------------------------------------------------------------------------
// SiluMulToBf16

TEST(CudaKernelsTest, SiluMulToBf16MatchesCpuWithinBf16Rounding) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(4);
  for (const int64_t tokens : {1, 3, 7}) {
    for (const int64_t inter : {1, 5, 1024, 1027, 1408}) {
      SCOPED_TRACE(absl::StrCat("tokens ", tokens, " inter ", inter));
      const std::vector<uint16_t> gate_up =
          ToBf16Bits(RandomValues(tokens * 2 * inter, rng, -6.0f, 6.0f));
      const std::vector<float> wide = FromBf16Bits(gate_up);
      std::vector<float> expected(tokens * inter);
      for (int64_t t = 0; t < tokens; ++t) {
        const float* row = wide.data() + t * 2 * inter;
        cpu::SiluMul(row, row + inter, expected.data() + t * inter, inter);
      }

      DeviceBuffer<bf16> dgu = UploadBf16(gate_up);
      DeviceBuffer<bf16> dout;
      ASSERT_TRUE(dout.Reserve(tokens * inter).ok());
      ExpectRan(SiluMulToBf16(dgu.data(), tokens, inter, dout.data(), nullptr));
      EXPECT_TRUE(
          AllRelNear(FromBf16Bits(DownloadBf16(dout.data(), tokens * inter)),
                     expected, kHalfBf16Ulp + 1e-5));
    }
  }
}

// ---------------------------------------------------------------------------
// AddBias, Clamp, AddInPlace, AddSigmoidGated

TEST(CudaKernelsTest, AddBiasMatchesCpuExactly) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  for (const RowShape& s : kRowShapes) {
    SCOPED_TRACE(absl::StrCat("rows ", s.rows, " n ", s.n, " ld ", s.ld));
    const std::vector<float> y = PaddedRows(s.rows, s.n, s.ld, rng);
    const OwnedTensor bias(DType::kBF16, {s.n}, RandomValues(s.n, rng));
    std::vector<float> expected = y;
    cpu::AddBias(expected.data(), s.rows, s.ld, bias.view());

    DeviceBuffer<float> dy = Upload(y);
    DeviceBuffer<bf16> db = UploadTensor(bias);
    ExpectRan(AddBias(dy.data(), s.rows, s.n, s.ld, db.data(), nullptr));
    EXPECT_TRUE(BitsEqual(Download(dy.data(), y.size()), expected));
  }
}

TEST(CudaKernelsTest, ClampMatchesCpuExactly) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(6);
  for (const int64_t n : {1, 5, 4099, 100000}) {
    SCOPED_TRACE(absl::StrCat("n ", n));
    std::vector<float> x = RandomValues(n, rng, -10.0f, 10.0f);
    x[0] = std::numeric_limits<float>::infinity();
    if (n > 2) x[1] = -std::numeric_limits<float>::infinity();
    if (n > 3) x[2] = std::numeric_limits<float>::quiet_NaN();
    if (n > 4) x[3] = 7.0f;  // exactly the limit
    // Aligned (4-wide body plus a tail) and misaligned by one (scalar).
    for (const int64_t offset : {0, 1}) {
      if (offset >= n) continue;
      std::vector<float> expected = x;
      cpu::Clamp(expected.data() + offset, n - offset, 7.0f);
      DeviceBuffer<float> dx = Upload(x);
      ExpectRan(Clamp(dx.data() + offset, n - offset, 7.0f, nullptr));
      EXPECT_TRUE(BitsEqual(Download(dx.data(), n), expected));
    }
  }
}

TEST(CudaKernelsTest, AddInPlaceMatchesCpuExactly) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(7);
  for (const int64_t n : {1, 3, 4096, 100003}) {
    for (const int64_t offset : {0, 1}) {
      if (offset >= n) continue;
      SCOPED_TRACE(absl::StrCat("n ", n, " offset ", offset));
      const std::vector<float> y = RandomValues(n, rng);
      const std::vector<float> x = RandomValues(n, rng);
      std::vector<float> expected = y;
      for (int64_t i = offset; i < n; ++i) expected[i] = y[i] + x[i];
      DeviceBuffer<float> dy = Upload(y);
      DeviceBuffer<float> dx = Upload(x);
      ExpectRan(AddInPlace(dy.data() + offset, dx.data() + offset, n - offset,
                           nullptr));
      EXPECT_TRUE(BitsEqual(Download(dy.data(), n), expected));
    }
  }
}

TEST(CudaKernelsTest, AddSigmoidGatedMatchesCpu) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(8);
  for (const int64_t tokens : {1, 5}) {
    for (const int64_t n : {1, 7, 2048, 2051}) {
      SCOPED_TRACE(absl::StrCat("tokens ", tokens, " n ", n));
      const std::vector<float> y = RandomValues(tokens * n, rng);
      const std::vector<float> x = RandomValues(tokens * n, rng);
      const std::vector<float> gate = RandomValues(tokens, rng, -8.0f, 8.0f);
      // The CPU transformer's shared-expert addition.
      std::vector<float> expected = y;
      std::vector<double> tolerance(y.size());
      for (int64_t t = 0; t < tokens; ++t) {
        const float g = cpu::Sigmoid(gate[t]);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t at = t * n + i;
          expected[at] += g * x[at];
          tolerance[at] = 1e-6 * (std::fabs(y[at]) + std::fabs(g * x[at]));
        }
      }
      DeviceBuffer<float> dy = Upload(y);
      DeviceBuffer<float> dx = Upload(x);
      DeviceBuffer<float> dg = Upload(gate);
      ExpectRan(
          AddSigmoidGated(dy.data(), dx.data(), dg.data(), tokens, n, nullptr));
      EXPECT_TRUE(AllNear(Download(dy.data(), y.size()), expected,
                          [&](size_t i) { return tolerance[i]; }));
    }
  }
}

// ---------------------------------------------------------------------------
// ToBf16, FromBf16, Embed, GatherRowsToBf16

TEST(CudaKernelsTest, ToBf16RoundsAsTheCpuExactly) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(9);
  // Finite values, ties, infinities, signed zeros, subnormals and an
  // overflow to infinity. (NaN payloads are not compared: the CPU keeps
  // them, the hardware conversion may not.)
  std::vector<float> x = RandomValues(10007, rng, -100.0f, 100.0f);
  const float specials[] = {0.0f,
                            -0.0f,
                            1.0f,
                            1.00390625f,  // exactly halfway: ties to even
                            1.01171875f,  // halfway, rounds up to even
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            1e-40f,
                            -3e-39f,
                            std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::min()};
  std::copy(std::begin(specials), std::end(specials), x.begin());
  for (const int64_t offset : {0, 1}) {
    SCOPED_TRACE(absl::StrCat("offset ", offset));
    const int64_t n = static_cast<int64_t>(x.size()) - offset;
    std::vector<float> tail(x.begin() + offset, x.end());
    DeviceBuffer<float> dx = Upload(x);
    DeviceBuffer<bf16> dy;
    ASSERT_TRUE(dy.Reserve(x.size()).ok());
    ExpectRan(ToBf16(dx.data() + offset, n, dy.data() + offset, nullptr));
    const std::vector<uint16_t> all = DownloadBf16(dy.data(), x.size());
    EXPECT_TRUE(
        BitsEqual(std::vector<uint16_t>(all.begin() + offset, all.end()),
                  ToBf16Bits(tail)));
  }
}

TEST(CudaKernelsTest, FromBf16WidensEveryBitPatternExactly) {
  MOE_SKIP_WITHOUT_GPU();
  std::vector<uint16_t> bits(65536);
  std::iota(bits.begin(), bits.end(), 0);
  for (const int64_t offset : {0, 1}) {
    SCOPED_TRACE(absl::StrCat("offset ", offset));
    const int64_t n = 65536 - offset;
    DeviceBuffer<bf16> dx = UploadBf16(bits);
    DeviceBuffer<float> dy;
    ASSERT_TRUE(dy.Reserve(65536).ok());
    ExpectRan(FromBf16(dx.data() + offset, n, dy.data() + offset, nullptr));
    const std::vector<float> all = Download(dy.data(), 65536);
    EXPECT_TRUE(BitsEqual(std::vector<float>(all.begin() + offset, all.end()),
                          FromBf16Bits(std::vector<uint16_t>(
                              bits.begin() + offset, bits.end()))));
  }
}

TEST(CudaKernelsTest, EmbedLooksUpRowsExactly) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(10);
  constexpr int64_t kVocab = 50;
  for (const int64_t hidden : {1, 6, 64, 1030}) {
    SCOPED_TRACE(absl::StrCat("hidden ", hidden));
    const std::vector<uint16_t> table =
        ToBf16Bits(RandomValues(kVocab * hidden, rng));
    std::vector<int32_t> ids = {0, 49, 3, 3, 17, 49, 0};
    std::vector<float> expected;
    for (int32_t id : ids) {
      for (int64_t i = 0; i < hidden; ++i) {
        expected.push_back(BF16ToFloat(table[id * hidden + i]));
      }
    }
    DeviceBuffer<bf16> dt = UploadBf16(table);
    DeviceBuffer<int32_t> di = Upload(ids);
    DeviceBuffer<float> dout;
    ASSERT_TRUE(dout.Reserve(expected.size()).ok());
    ExpectRan(
        Embed(dt.data(), di.data(), ids.size(), hidden, dout.data(), nullptr));
    EXPECT_TRUE(BitsEqual(Download(dout.data(), expected.size()), expected));
  }
}

TEST(CudaKernelsTest, GatherRowsToBf16Exactly) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(11);
  constexpr int64_t kSourceRows = 9;
  for (const int64_t n : {1, 5, 512, 2050}) {
    SCOPED_TRACE(absl::StrCat("n ", n));
    const std::vector<float> x = RandomValues(kSourceRows * n, rng, -3, 3);
    const std::vector<int32_t> rows = {8, 0, 3, 3, 5, 1, 8, 2, 7, 4, 6};
    std::vector<uint16_t> expected;
    for (int32_t r : rows) {
      for (int64_t i = 0; i < n; ++i) {
        expected.push_back(FloatToBF16(x[r * n + i]));
      }
    }
    DeviceBuffer<float> dx = Upload(x);
    DeviceBuffer<int32_t> dr = Upload(rows);
    DeviceBuffer<bf16> dout;
    ASSERT_TRUE(dout.Reserve(expected.size()).ok());
    ExpectRan(GatherRowsToBf16(dx.data(), dr.data(), rows.size(), n,
                               dout.data(), nullptr));
    EXPECT_TRUE(
        BitsEqual(DownloadBf16(dout.data(), expected.size()), expected));
  }
}

// ---------------------------------------------------------------------------
// CombineExperts

TEST(CudaKernelsTest, CombineExpertsAddsAsTheCpuExecutor) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  struct Case {
    int64_t tokens;
    int k;
    int experts;
    int64_t hidden;
  };
  for (const Case& c : {Case{5, 2, 8, 1024}, Case{9, 8, 64, 2049},
                        Case{3, 1, 4, 7}, Case{4, 32, 40, 256}}) {
    SCOPED_TRACE(
        absl::StrCat("tokens ", c.tokens, " k ", c.k, " hidden ", c.hidden));
    // A routing with distinct experts per token in random (not ascending)
    // slot order, and the gathered rows grouped by ascending expert, tokens
    // in order within an expert, as CudaTransformer lays them out.
    std::vector<int32_t> slot_expert(c.tokens * c.k);
    std::vector<float> weight = RandomValues(c.tokens * c.k, rng, 0.0f, 1.0f);
    for (int64_t t = 0; t < c.tokens; ++t) {
      std::vector<int32_t> ids(c.experts);
      std::iota(ids.begin(), ids.end(), 0);
      std::shuffle(ids.begin(), ids.end(), rng);
      std::copy(ids.begin(), ids.begin() + c.k, slot_expert.begin() + t * c.k);
    }
    std::vector<int32_t> row_of_slot(c.tokens * c.k);
    int32_t next_row = 0;
    for (int32_t e = 0; e < c.experts; ++e) {
      for (int64_t t = 0; t < c.tokens; ++t) {
        for (int j = 0; j < c.k; ++j) {
          if (slot_expert[t * c.k + j] == e)
            row_of_slot[t * c.k + j] = next_row++;
        }
      }
    }
    const int64_t rows = c.tokens * c.k;
    const std::vector<float> expert_out = RandomValues(rows * c.hidden, rng);
    // LocalMoeExecutor: out = 0, then out += w * y in ascending expert order.
    std::vector<float> expected(c.tokens * c.hidden, 0.0f);
    std::vector<double> tolerance(expected.size(), 0.0);
    for (int32_t e = 0; e < c.experts; ++e) {
      for (int64_t t = 0; t < c.tokens; ++t) {
        for (int j = 0; j < c.k; ++j) {
          if (slot_expert[t * c.k + j] != e) continue;
          const float w = weight[t * c.k + j];
          const float* src =
              expert_out.data() + row_of_slot[t * c.k + j] * c.hidden;
          for (int64_t i = 0; i < c.hidden; ++i) {
            expected[t * c.hidden + i] += w * src[i];
            tolerance[t * c.hidden + i] += 1e-6 * std::fabs(w * src[i]);
          }
        }
      }
    }
    DeviceBuffer<float> dy = Upload(expert_out);
    DeviceBuffer<int32_t> drow = Upload(row_of_slot);
    DeviceBuffer<float> dw = Upload(weight);
    DeviceBuffer<float> dout;
    ASSERT_TRUE(dout.Reserve(expected.size()).ok());
    ExpectRan(CombineExperts(dy.data(), drow.data(), dw.data(), c.tokens, c.k,
                             c.hidden, dout.data(), nullptr));
    EXPECT_TRUE(AllNear(Download(dout.data(), expected.size()), expected,
                        [&](size_t i) { return tolerance[i]; }));
  }
}


}  // namespace
}  // namespace moe::cuda
