// The factories of core/backends.h in a build without the CUDA backend
// (CMake found no CUDA toolkit, or MOE_CUDA=OFF): the CPU backend, and a
// clear error for a CUDA device.
#include "absl/strings/str_cat.h"
#include "core/backends.h"

namespace moe {

GpuInventory ProbeGpus() {
  GpuInventory inventory;
  inventory.why_none =
      "built without CUDA (configure on a machine with CUDA >= 12.5 at "
      "/usr/local/cuda, or with nvcc on PATH, and MOE_CUDA=AUTO or ON)";
  return inventory;
}

namespace {

// CheckDeviceUsable's error for a CUDA device in this build.
absl::Status NoCudaBackend(const DeviceSpec& device) {
  absl::Status status = CheckDeviceUsable(device);
  if (status.ok()) {
    status = absl::InternalError("CUDA device usable in a build without CUDA");
  }
  return status;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExpertFfnBackend>> CreateExpertFfnBackend(
    const DeviceSpec& device, absl::Span<const FfnWeights* const> experts,
    ThreadPool* pool) {
  if (device.is_cuda()) return NoCudaBackend(device);
  return CreateCpuExpertFfn(pool);
}

absl::StatusOr<std::unique_ptr<ForwardPass>> CreateForwardPass(
    const DeviceSpec& device, const ModelWeights* weights, KvCache* cache,
    MoeExecutor* moe, ThreadPool* pool) {
  if (device.is_cuda()) return NoCudaBackend(device);
  return CreateCpuForwardPass(weights, cache, moe, pool);
}

}  // namespace moe
