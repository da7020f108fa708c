// Shared by the CUDA kernel tests: host <-> device copies, BF16 bits and
// tolerance checks with readable failures.
#ifndef MOE_TESTS_GPU_CUDA_TEST_UTIL_H_
#define MOE_TESTS_GPU_CUDA_TEST_UTIL_H_

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
#include "core/cuda/device_buffer.h"
#include "core/cuda/kernels.h"
#include "core/dtype.h"
#include "gtest/gtest.h"
#include "tests/kernel_test_util.h"

namespace moe::cuda::test {

using ::moe::testing::OwnedTensor;
using ::moe::testing::RandomValues;

// Written into padding the kernels must not touch.
constexpr float kSentinel = -12345.5f;
constexpr double kHalfBf16Ulp = 0x1p-8;

// ---------------------------------------------------------------------------
// Host <-> device.

template <typename T>
DeviceBuffer<T> Upload(const T* host, int64_t count) {
  DeviceBuffer<T> device;
  const absl::Status status = device.Reserve(std::max<int64_t>(count, 1));
  EXPECT_TRUE(status.ok()) << status;
  if (status.ok() && count > 0) {
    EXPECT_EQ(cudaMemcpy(device.data(), host, count * sizeof(T),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  return device;
}

template <typename T>
DeviceBuffer<T> Upload(const std::vector<T>& host) {
  return Upload(host.data(), static_cast<int64_t>(host.size()));
}

// BF16 bit patterns (core/dtype.h FloatToBF16) to device BF16.
inline DeviceBuffer<bf16> UploadBf16(const std::vector<uint16_t>& bits) {
  static_assert(sizeof(bf16) == sizeof(uint16_t));
  return Upload(reinterpret_cast<const bf16*>(bits.data()),
                static_cast<int64_t>(bits.size()));
}

// The stored bytes of a BF16 OwnedTensor, on the device.
inline DeviceBuffer<bf16> UploadTensor(const OwnedTensor& t) {
  return Upload(static_cast<const bf16*>(t.view().data),
                t.view().NumElements());
}

template <typename T>
std::vector<T> Download(const T* device, int64_t count) {
  std::vector<T> host(count);
  if (count > 0) {
    EXPECT_EQ(cudaMemcpy(host.data(), device, count * sizeof(T),
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return host;
}

inline std::vector<uint16_t> DownloadBf16(const bf16* device, int64_t count) {
  std::vector<bf16> raw = Download(device, count);
  std::vector<uint16_t> bits(count);
  if (count > 0) std::memcpy(bits.data(), raw.data(), count * sizeof(bf16));
  return bits;
}

inline std::vector<uint16_t> ToBf16Bits(const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = FloatToBF16(values[i]);
  return bits;
}

inline std::vector<float> FromBf16Bits(const std::vector<uint16_t>& bits) {
  std::vector<float> values(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) values[i] = BF16ToFloat(bits[i]);
  return values;
}

// The launch succeeded and the kernel ran to completion.
inline void ExpectRan(const absl::Status& launch) {
  EXPECT_TRUE(launch.ok()) << launch;
  const cudaError_t done = cudaDeviceSynchronize();
  EXPECT_EQ(done, cudaSuccess) << cudaGetErrorString(done);
}

// Every |actual[i] - expected[i]| <= tolerance(i); reports the first few
// that are not.
template <typename Tolerance>
inline ::testing::AssertionResult AllNear(const std::vector<float>& actual,
                                   const std::vector<float>& expected,
                                   Tolerance tolerance) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "sizes " << actual.size() << " vs " << expected.size();
  }
  int bad = 0;
  std::string first;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    const double tol = tolerance(i);
    if (!(diff <= tol)) {
      if (++bad <= 5) {
        absl::StrAppend(&first, "\n  [", i, "] ", actual[i], " vs ",
                        expected[i], " (tolerance ", tol, ")");
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << actual.size() << " outside tolerance:" << first;
}

inline ::testing::AssertionResult AllRelNear(const std::vector<float>& actual,
                                      const std::vector<float>& expected,
                                      double rel) {
  return AllNear(actual, expected, [&](size_t i) {
    return rel * std::fabs(static_cast<double>(expected[i])) + 1e-30;
  });
}

// Bit-for-bit equality (NaN equals NaN of the same bits; -0 != +0).
template <typename T>
inline ::testing::AssertionResult BitsEqual(const std::vector<T>& actual,
                                     const std::vector<T>& expected) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "sizes " << actual.size() << " vs " << expected.size();
  }
  int bad = 0;
  std::string first;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::memcmp(&actual[i], &expected[i], sizeof(T)) != 0) {
      if (++bad <= 5) {
        absl::StrAppend(&first, "\n  [", i, "] ", actual[i], " vs ",
                        expected[i]);
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << actual.size() << " differ:" << first;
}

// rows x ld values: random in the first n of each row, kSentinel after.
inline std::vector<float> PaddedRows(int64_t rows, int64_t n, int64_t ld,
                              std::mt19937& rng, float lo = -2.0f,
                              float hi = 2.0f) {
  std::vector<float> x(rows * ld, kSentinel);
  const std::vector<float> values = RandomValues(rows * n, rng, lo, hi);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(values.begin() + r * n, values.begin() + (r + 1) * n,
              x.begin() + r * ld);
  }
  return x;
}


}  // namespace moe::cuda::test

#endif  // MOE_TESTS_GPU_CUDA_TEST_UTIL_H_
