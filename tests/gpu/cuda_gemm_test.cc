// cuBLAS GEMMs (core/cuda/gemm.h) against the CPU reference matmul:
// Bf16ToF32 (plain, into a strided output, accumulating) and GroupedBf16
// over problems of several shapes, including empty ones. Inputs are BF16 on
// both sides, so the only differences are float32 summation order (and, for
// GroupedBf16, the BF16 rounding of the output: 2^-8 relative).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/cpu/kernels.h"
#include "core/cuda/cublas_loader.h"
#include "core/cuda/device_buffer.h"
#include "core/cuda/gemm.h"
#include "core/dtype.h"
#include "gtest/gtest.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernel_test_util.h"

namespace moe::cuda {
namespace {

using ::moe::testing::OwnedTensor;
using ::moe::testing::RandomValues;

// Values rounded to BF16, as floats and as BF16 bits.
struct Bf16Data {
  std::vector<float> values;
  std::vector<uint16_t> bits;
};
Bf16Data RandomBf16(int64_t n, std::mt19937& rng) {
  Bf16Data d;
  d.values = RandomValues(n, rng);
  for (float& v : d.values) {
    d.bits.push_back(FloatToBF16(v));
    v = BF16ToFloat(d.bits.back());
  }
  return d;
}

template <typename T>
DeviceBuffer<T> Upload(const void* host, int64_t count) {
  DeviceBuffer<T> buffer;
  EXPECT_TRUE(buffer.Reserve(count).ok());
  EXPECT_EQ(cudaMemcpy(buffer.data(), host, count * sizeof(T),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  return buffer;
}

// y[m, n] = x[m, k] · w[n, k]^T on the CPU (float32 reference).
std::vector<float> Reference(const Bf16Data& x, int64_t m, int64_t k,
                             const Bf16Data& w, int64_t n) {
  OwnedTensor weight(DType::kF32, {n, k}, w.values);
  std::vector<float> y(m * n);
  cpu::MatMulReference({x.values.data(), m, k, &weight.view(), y.data(), n});
  return y;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want,
                int64_t k, double relative) {
  ASSERT_EQ(got.size(), want.size());
  // Inputs are in [-1, 1): a dot product of k terms is bounded by k.
  const double tolerance = 1e-5 * k;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tolerance + relative * std::fabs(want[i]))
        << "element " << i;
  }
}

// cuBLAS is loaded with dlopen, not linked (core/cuda/cublas_loader.h);
// loading needs no device, so this runs on every machine with the toolkit.
TEST(CublasLoaderTest, LoadsEveryEntryPointWithoutADevice) {
  absl::StatusOr<const CublasApi*> api = LoadCublas();
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_NE((*api)->create, nullptr);
  EXPECT_NE((*api)->gemm_ex, nullptr);
  EXPECT_NE((*api)->gemm_grouped_batched_ex, nullptr);
  EXPECT_STREQ((*api)->status_name(CUBLAS_STATUS_NOT_INITIALIZED),
               "CUBLAS_STATUS_NOT_INITIALIZED");
  // A second call returns the same table.
  EXPECT_EQ(*LoadCublas(), *api);
}

TEST(CudaGemmTest, Bf16ToF32MatchesReferenceStridedAndAccumulating) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(3);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  absl::StatusOr<Gemm> gemm = Gemm::Create(stream);
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  for (auto [m, k, n] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 96},
                         {7, 256, 130}, {300, 512, 384}}) {
    SCOPED_TRACE(::testing::Message() << m << "x" << k << "x" << n);
    const Bf16Data x = RandomBf16(m * k, rng), w = RandomBf16(n * k, rng);
    const std::vector<float> want = Reference(x, m, k, w, n);
    DeviceBuffer<__nv_bfloat16> dx = Upload<__nv_bfloat16>(x.bits.data(), m * k);
    DeviceBuffer<__nv_bfloat16> dw = Upload<__nv_bfloat16>(w.bits.data(), n * k);
    // Output rows of stride n + 5, starting from ones: the plain call
    // overwrites the first n columns, the accumulating one adds to them.
    const int64_t ldy = n + 5;
    std::vector<float> ones(m * ldy, 1.0f);
    DeviceBuffer<float> dy = Upload<float>(ones.data(), m * ldy);
    ASSERT_TRUE(gemm->Bf16ToF32(dx.data(), m, k, dw.data(), n, dy.data(), ldy).ok());
    std::vector<float> got(m * ldy);
    ASSERT_EQ(cudaMemcpyAsync(got.data(), dy.data(), got.size() * sizeof(float),
                              cudaMemcpyDeviceToHost, stream),
              cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<float> dense(m * n), padding;
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 0; c < ldy; ++c) {
        if (c < n) {
          dense[r * n + c] = got[r * ldy + c];
        } else {
          padding.push_back(got[r * ldy + c]);
        }
      }
    }
    ExpectNear(dense, want, k, 1e-5);
    for (float p : padding) ASSERT_EQ(p, 1.0f) << "padding was written";
    ASSERT_TRUE(gemm->Bf16ToF32(dx.data(), m, k, dw.data(), n, dy.data(), ldy,
                                /*accumulate=*/true)
                    .ok());
    ASSERT_EQ(cudaMemcpyAsync(got.data(), dy.data(), got.size() * sizeof(float),
                              cudaMemcpyDeviceToHost, stream),
              cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<float> twice(want.size());
    for (size_t i = 0; i < want.size(); ++i) twice[i] = 2 * want[i];
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 0; c < n; ++c) dense[r * n + c] = got[r * ldy + c];
    }
    ExpectNear(dense, twice, 2 * k, 1e-5);
  }
  cudaStreamDestroy(stream);
}

TEST(CudaGemmTest, GroupedBf16MatchesReferenceForMixedShapes) {
  MOE_SKIP_WITHOUT_GPU();
  std::mt19937 rng(5);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  absl::StatusOr<Gemm> gemm = Gemm::Create(stream);
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  // (m, n, k): two problems of one shape (one cuBLAS group), others alone,
  // and an empty one that must be skipped.
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes = {
      {3, 128, 64}, {3, 128, 64}, {1, 64, 128}, {0, 64, 128}, {257, 96, 256}};
  std::vector<Bf16Data> xs, ws;
  std::vector<DeviceBuffer<__nv_bfloat16>> dx, dw, dy;
  std::vector<Gemm::Problem> problems;
  for (auto [m, n, k] : shapes) {
    xs.push_back(RandomBf16(m * k, rng));
    ws.push_back(RandomBf16(n * k, rng));
    dx.push_back(Upload<__nv_bfloat16>(xs.back().bits.data(), m * k));
    dw.push_back(Upload<__nv_bfloat16>(ws.back().bits.data(), n * k));
    dy.emplace_back();
    ASSERT_TRUE(dy.back().Reserve(std::max<int64_t>(m * n, 1)).ok());
  }
  for (size_t p = 0; p < shapes.size(); ++p) {
    auto [m, n, k] = shapes[p];
    problems.push_back({dx[p].data(), dw[p].data(), dy[p].data(), m, n, k});
  }
  ASSERT_TRUE(gemm->GroupedBf16(problems).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  for (size_t p = 0; p < shapes.size(); ++p) {
    auto [m, n, k] = shapes[p];
    if (m == 0) continue;
    SCOPED_TRACE(::testing::Message() << "problem " << p);
    std::vector<uint16_t> bits(m * n);
    ASSERT_EQ(cudaMemcpy(bits.data(), dy[p].data(), bits.size() * 2,
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
    std::vector<float> got(m * n);
    for (size_t i = 0; i < got.size(); ++i) got[i] = BF16ToFloat(bits[i]);
    ExpectNear(got, Reference(xs[p], m, k, ws[p], n), k, 1.0 / 256);
  }
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace moe::cuda
