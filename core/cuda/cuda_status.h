// CUDA, cuBLAS and NCCL results as absl::Status: INTERNAL naming the call
// and the library's own message, so a device failure reaches the caller
// (and the RPC) as a clear error rather than a crash.
#ifndef MOE_CORE_CUDA_CUDA_STATUS_H_
#define MOE_CORE_CUDA_CUDA_STATUS_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"

namespace moe::cuda {

absl::Status CudaStatus(cudaError_t error, const char* what);
absl::Status CublasStatus(cublasStatus_t status, const char* what);
// The error of the most recent kernel launch on this thread (clears it).
absl::Status LaunchStatus(const char* kernel);

}  // namespace moe::cuda

// Evaluates a cudaError_t / cublasStatus_t expression; returns INTERNAL
// naming it from the enclosing function on failure.
#define MOE_CUDA_RETURN_IF_ERROR(expr)                                     \
  do {                                                                     \
    absl::Status moe_cuda_status_ = ::moe::cuda::CudaStatus((expr), #expr); \
    if (!moe_cuda_status_.ok()) return moe_cuda_status_;                   \
  } while (false)
#define MOE_CUBLAS_RETURN_IF_ERROR(expr)                                     \
  do {                                                                       \
    absl::Status moe_cuda_status_ = ::moe::cuda::CublasStatus((expr), #expr); \
    if (!moe_cuda_status_.ok()) return moe_cuda_status_;                     \
  } while (false)

#endif  // MOE_CORE_CUDA_CUDA_STATUS_H_
