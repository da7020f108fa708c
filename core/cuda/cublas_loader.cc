#include "core/cuda/cublas_loader.h"

#include <dlfcn.h>

#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace moe::cuda {
namespace {

absl::StatusOr<CublasApi> Load() {
  const std::string library = absl::StrCat("libcublas.so.", CUBLAS_VER_MAJOR);
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    // The toolkit this was built against, where the loader's search path
    // does not reach it.
    handle = dlopen(absl::StrCat(MOE_CUDA_LIBRARY_DIR, "/", library).c_str(),
                    RTLD_NOW | RTLD_LOCAL);
  }
  if (handle == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load ", library, " (cuBLAS ", CUBLAS_VER_MAJOR,
                     ", from the CUDA toolkit; add its lib directory to "
                     "LD_LIBRARY_PATH): ", dlerror()));
  }
  CublasApi api;
  std::string missing;
  auto find = [&](auto& entry, const char* name) {
    entry = reinterpret_cast<std::remove_reference_t<decltype(entry)>>(
        dlsym(handle, name));
    if (entry == nullptr) absl::StrAppend(&missing, missing.empty() ? "" : ", ", name);
  };
  find(api.create, "cublasCreate_v2");
  find(api.destroy, "cublasDestroy_v2");
  find(api.set_stream, "cublasSetStream_v2");
  find(api.set_math_mode, "cublasSetMathMode");
  find(api.gemm_ex, "cublasGemmEx");
  find(api.gemm_grouped_batched_ex, "cublasGemmGroupedBatchedEx");
  find(api.status_name, "cublasGetStatusName");
  find(api.status_string, "cublasGetStatusString");
  if (!missing.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        library, " lacks ", missing, " (cuBLAS 12.5 or newer is needed)"));
  }
  return api;
}

}  // namespace

absl::StatusOr<const CublasApi*> LoadCublas() {
  // Loaded once; a failure is remembered too (the library will not appear).
  static const absl::StatusOr<CublasApi>* const api =
      new absl::StatusOr<CublasApi>(Load());
  if (!api->ok()) return api->status();
  return &**api;
}

}  // namespace moe::cuda
