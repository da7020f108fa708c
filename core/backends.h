// Choosing a compute device: "cpu" or "cuda[:N]". The CUDA backend is built
// only where CMake found CUDA (core/cuda/detect_cuda.cmake); in a CPU-only
// build the factories below answer FAILED_PRECONDITION for a CUDA device,
// so no caller needs to know how the library was built.
#ifndef MOE_CORE_BACKENDS_H_
#define MOE_CORE_BACKENDS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/expert_backend.h"
#include "core/forward_pass.h"
#include "core/kv_cache.h"
#include "core/model_weights.h"
#include "core/moe_executor.h"
#include "core/thread_pool.h"

namespace moe {

struct DeviceSpec {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int ordinal = 0;  // CUDA device index

  bool is_cuda() const { return kind == Kind::kCuda; }
  std::string ToString() const;  // "cpu" or "cuda:N"
};

// "cpu", "cuda" (device 0) or "cuda:N". INVALID_ARGUMENT naming the text
// otherwise.
absl::StatusOr<DeviceSpec> ParseDeviceSpec(absl::string_view text);

// What this process can use: whether the CUDA backend is built in, the
// devices the driver reports, and why there are none.
struct GpuInventory {
  bool backend_built = false;
  std::vector<std::string> devices;  // names, by ordinal
  std::string why_none;              // set when devices is empty
};
GpuInventory ProbeGpus();

// OK for "cpu" and for a CUDA device this process can use; otherwise
// FAILED_PRECONDITION saying why (no CUDA backend in this build, no driver,
// ordinal out of range).
absl::Status CheckDeviceUsable(const DeviceSpec& device);

// The grouped-FFN backend for `experts` (borrowed; the CUDA backend copies
// them to the device as BF16 here, so this is where an expert server's
// weights are uploaded). `pool` serves the CPU backend.
absl::StatusOr<std::unique_ptr<ExpertFfnBackend>> CreateExpertFfnBackend(
    const DeviceSpec& device, absl::Span<const FfnWeights* const> experts,
    ThreadPool* pool);

// The forward pass over `weights` (non-expert weights required; borrowed).
// `moe` runs the routed experts; on a CUDA device it may be null, and then
// the pass routes and runs them on the device itself, which needs every
// expert in `weights`. On CUDA the K/V rows live in device memory: `cache`
// keeps the block accounting (tables, prefixes) and its host rows are not
// used.
absl::StatusOr<std::unique_ptr<ForwardPass>> CreateForwardPass(
    const DeviceSpec& device, const ModelWeights* weights, KvCache* cache,
    MoeExecutor* moe, ThreadPool* pool);

// The CPU backends: what the factories above return for "cpu".
std::unique_ptr<ExpertFfnBackend> CreateCpuExpertFfn(ThreadPool* pool);
absl::StatusOr<std::unique_ptr<ForwardPass>> CreateCpuForwardPass(
    const ModelWeights* weights, KvCache* cache, MoeExecutor* moe,
    ThreadPool* pool);

}  // namespace moe

#endif  // MOE_CORE_BACKENDS_H_
