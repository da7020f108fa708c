// cuBLAS, loaded with dlopen the first time a GEMM is set up, not linked.
//
// Why: libcublasLt reserves about 94 KiB of static TLS per thread when it is
// loaded with the program, and threads started with a small explicit stack
// (civetweb's, behind every server's /metrics) then fail to start. Loaded
// with dlopen its TLS is allocated on demand instead, and processes that
// never use a GPU never load it at all.
#ifndef MOE_CORE_CUDA_CUBLAS_LOADER_H_
#define MOE_CORE_CUDA_CUBLAS_LOADER_H_

#include <cublas_v2.h>

#include "absl/status/statusor.h"

namespace moe::cuda {

// The cuBLAS entry points the backend uses.
struct CublasApi {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasDestroy_v2) destroy;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSetMathMode) set_math_mode;
  // (cublas_api.h also declares a C++ overload taking cudaDataType as the
  // compute type, so the C entry point's type is spelled out.)
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t,
                            cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*,
                            cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t);
  decltype(&cublasGemmGroupedBatchedEx) gemm_grouped_batched_ex;
  decltype(&cublasGetStatusName) status_name;
  decltype(&cublasGetStatusString) status_string;
};

// Loads libcublas.so.<major of the headers> once (thread-safe) and returns
// its entry points, or FAILED_PRECONDITION naming the library and dlerror().
absl::StatusOr<const CublasApi*> LoadCublas();

}  // namespace moe::cuda

#endif  // MOE_CORE_CUDA_CUBLAS_LOADER_H_
