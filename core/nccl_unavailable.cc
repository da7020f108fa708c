// core/nccl_data_plane.h in a build without NCCL (no CUDA toolkit, MOE_CUDA
// =OFF, or CUDA without nccl.h and libnccl): every entry point says so with
// FAILED_PRECONDITION, so the router and the expert servers refuse
// --data_plane=nccl with the reason instead of failing later.
#include "absl/strings/str_cat.h"
#include "core/nccl_data_plane.h"

namespace moe {
namespace {

absl::Status NoNccl() {
  const GpuInventory gpus = ProbeGpus();
  return absl::FailedPreconditionError(absl::StrCat(
      "this build has no NCCL: ",
      gpus.backend_built
          ? "CUDA was found when it was configured, but nccl.h and libnccl "
            "were not; install NCCL next to the CUDA toolkit and configure "
            "again"
          : gpus.why_none));
}

}  // namespace

bool NcclBuilt() { return false; }

absl::Status CheckNcclUsable(const DeviceSpec& device) { return NoNccl(); }

absl::StatusOr<std::string> NewNcclUniqueId() { return NoNccl(); }

absl::StatusOr<std::unique_ptr<NcclCommunicator>> JoinNcclCommunicator(
    const NcclJoinOptions& options) {
  return NoNccl();
}

}  // namespace moe
