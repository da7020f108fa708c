#include "core/cuda/cuda_status.h"

#include "absl/strings/str_cat.h"
#include "core/cuda/cublas_loader.h"

namespace moe::cuda {

absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " failed: ",
                                          cudaGetErrorName(error), " (",
                                          cudaGetErrorString(error), ")"));
}

absl::Status CublasStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  absl::StatusOr<const CublasApi*> api = LoadCublas();
  if (!api.ok()) {
    return absl::InternalError(
        absl::StrCat(what, " failed: cublasStatus_t ", static_cast<int>(status)));
  }
  return absl::InternalError(absl::StrCat(what, " failed: ",
                                          (*api)->status_name(status), " (",
                                          (*api)->status_string(status), ")"));
}

absl::Status LaunchStatus(const char* kernel) {
  return CudaStatus(cudaGetLastError(), kernel);
}

}  // namespace moe::cuda
