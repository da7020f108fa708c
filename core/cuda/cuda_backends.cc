// The factories of core/backends.h in a build with the CUDA backend.
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "core/backends.h"
#include "core/cuda/cuda_expert_ffn.h"
#include "core/cuda/cuda_transformer.h"

namespace moe {

GpuInventory ProbeGpus() {
  GpuInventory inventory;
  inventory.backend_built = true;
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();  // not sticky, but leave no error behind
    inventory.why_none = absl::StrCat("cudaGetDeviceCount: ",
                                      cudaGetErrorString(error));
    return inventory;
  }
  if (count == 0) {
    inventory.why_none = "the CUDA driver reports no device";
    return inventory;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      inventory.devices.push_back(absl::StrCat("cuda:", i));
      continue;
    }
    inventory.devices.push_back(
        absl::StrCat(prop.name, " (sm_", prop.major, prop.minor, ", ",
                     prop.totalGlobalMem >> 20, " MiB)"));
  }
  return inventory;
}

absl::StatusOr<std::unique_ptr<ExpertFfnBackend>> CreateExpertFfnBackend(
    const DeviceSpec& device, absl::Span<const FfnWeights* const> experts,
    ThreadPool* pool) {
  if (!device.is_cuda()) return CreateCpuExpertFfn(pool);
  if (absl::Status s = CheckDeviceUsable(device); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<cuda::CudaExpertFfn>> ffn =
      cuda::CudaExpertFfn::Create(device.ordinal, experts);
  if (!ffn.ok()) return ffn.status();
  return std::unique_ptr<ExpertFfnBackend>(*std::move(ffn));
}

absl::StatusOr<std::unique_ptr<ForwardPass>> CreateForwardPass(
    const DeviceSpec& device, const ModelWeights* weights, KvCache* cache,
    MoeExecutor* moe, ThreadPool* pool) {
  if (!device.is_cuda()) {
    return CreateCpuForwardPass(weights, cache, moe, pool);
  }
  if (weights->config.is_deepseek()) {
    // The CUDA pass has neither MLA nor DeepSeek's gating yet.
    return absl::UnimplementedError(absl::StrCat(
        "device ", device.ToString(), ": the CUDA forward pass does not "
        "implement ", FamilyName(weights->config.family),
        " (Multi-head Latent Attention); run the attention side with "
        "--device cpu (expert servers may still use cuda)"));
  }
  if (absl::Status s = CheckDeviceUsable(device); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<cuda::CudaTransformer>> pass =
      cuda::CudaTransformer::Create(device.ordinal, weights, cache, moe);
  if (!pass.ok()) return pass.status();
  return std::unique_ptr<ForwardPass>(*std::move(pass));
}

}  // namespace moe
