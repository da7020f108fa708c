// The backend-neutral half of core/backends.h; the factories live in
// core/cuda/cuda_backends.cc (CUDA builds) or core/cpu_only_backends.cc.
#include "core/backends.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "core/transformer.h"

namespace moe {

std::string DeviceSpec::ToString() const {
  return is_cuda() ? absl::StrCat("cuda:", ordinal) : "cpu";
}

absl::StatusOr<DeviceSpec> ParseDeviceSpec(absl::string_view text) {
  DeviceSpec spec;
  if (text == "cpu") return spec;
  spec.kind = DeviceSpec::Kind::kCuda;
  if (text == "cuda") return spec;
  int ordinal = -1;
  if (absl::StartsWith(text, "cuda:") &&
      absl::SimpleAtoi(text.substr(5), &ordinal) && ordinal >= 0 &&
      ordinal < 1024) {
    spec.ordinal = ordinal;
    return spec;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "device \"", text, "\" is not one of cpu, cuda, cuda:N (N >= 0)"));
}

absl::Status CheckDeviceUsable(const DeviceSpec& device) {
  if (!device.is_cuda()) return absl::OkStatus();
  const GpuInventory gpus = ProbeGpus();
  if (!gpus.backend_built) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device.ToString(), " asked for, but this build has no CUDA "
        "backend: ", gpus.why_none));
  }
  if (gpus.devices.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device.ToString(), " asked for, but no CUDA device is "
        "usable: ", gpus.why_none));
  }
  if (device.ordinal >= static_cast<int>(gpus.devices.size())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device.ToString(), " asked for, but only ",
        gpus.devices.size(), " CUDA device(s) are visible"));
  }
  return absl::OkStatus();
}

std::unique_ptr<ExpertFfnBackend> CreateCpuExpertFfn(ThreadPool* pool) {
  return std::make_unique<CpuExpertFfn>(pool);
}

absl::StatusOr<std::unique_ptr<ForwardPass>> CreateCpuForwardPass(
    const ModelWeights* weights, KvCache* cache, MoeExecutor* moe,
    ThreadPool* pool) {
  if (moe == nullptr) {
    return absl::InvalidArgumentError(
        "the CPU forward pass needs a MoeExecutor for the routed experts");
  }
  return std::make_unique<Transformer>(weights, cache, moe, pool);
}

}  // namespace moe
