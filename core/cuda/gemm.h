// cuBLAS GEMMs in the row-major convention of the CPU backend: y[m, n] =
// x[m, k] · w[n, k]^T with w a PyTorch Linear weight [n, k], BF16 inputs and
// float32 accumulation.
#ifndef MOE_CORE_CUDA_GEMM_H_
#define MOE_CORE_CUDA_GEMM_H_

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/cuda/cublas_loader.h"
#include "core/cuda/device_buffer.h"

namespace moe::cuda {

// One cuBLAS handle bound to one stream. Not thread-safe (one executor
// thread per device owns it).
class Gemm {
 public:
  // INTERNAL naming the call when cuBLAS cannot start on the current device;
  // FAILED_PRECONDITION when libcublas cannot be loaded.
  static absl::StatusOr<Gemm> Create(cudaStream_t stream);
  Gemm(Gemm&& other) noexcept;
  Gemm& operator=(Gemm&&) = delete;
  Gemm(const Gemm&) = delete;
  ~Gemm();

  // y[m, n] (float32, row stride ldy) = x[m, k] (BF16, dense) · w^T, w BF16
  // [n, k]; accumulate = true adds to y instead.
  absl::Status Bf16ToF32(const __nv_bfloat16* x, int64_t m, int64_t k,
                         const __nv_bfloat16* w, int64_t n, float* y,
                         int64_t ldy, bool accumulate = false);

  // One problem of a grouped GEMM: y[m, n] = x[m, k] · w[n, k]^T, all BF16,
  // dense rows.
  struct Problem {
    const __nv_bfloat16* x;
    const __nv_bfloat16* w;
    __nv_bfloat16* y;
    int64_t m, n, k;
  };
  // Every problem in one cublasGemmGroupedBatchedEx call (problems of equal
  // shape share a group). Problems with m == 0 are skipped.
  absl::Status GroupedBf16(absl::Span<const Problem> problems);

 private:
  Gemm(const CublasApi* api, cublasHandle_t handle, cudaStream_t stream)
      : api_(api), handle_(handle), stream_(stream) {}
  const CublasApi* api_;
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer<const void*> pointers_;  // the grouped call's A/B/C arrays
  std::vector<const void*> host_pointers_;
};

}  // namespace moe::cuda

#endif  // MOE_CORE_CUDA_GEMM_H_
