// Where grouped expert FFNs run: the CPU backend (GroupedFfnRunner on a
// thread pool) or the CUDA backend (core/cuda/cuda_expert_ffn.h), behind one
// interface. Created by CreateExpertFfnBackend (core/backends.h).
#ifndef MOE_CORE_EXPERT_BACKEND_H_
#define MOE_CORE_EXPERT_BACKEND_H_

#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "core/expert_ffn.h"
#include "core/thread_pool.h"

namespace moe {

// Not thread-safe: one executor thread calls Run.
class ExpertFfnBackend {
 public:
  virtual ~ExpertFfnBackend() = default;
  // "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3)": for logs and /metrics.
  virtual std::string name() const = 0;
  // Computes every group (FfnGroup: host input and output rows, float32).
  // Every group's `weights` must be one of the experts the backend was
  // created with; INVALID_ARGUMENT otherwise, and INTERNAL naming the CUDA
  // call for a device failure.
  virtual absl::Status Run(absl::Span<const FfnGroup> groups) = 0;
};

// The CPU backend: `pool` is borrowed (nullptr: the calling thread).
class CpuExpertFfn final : public ExpertFfnBackend {
 public:
  explicit CpuExpertFfn(ThreadPool* pool) : pool_(pool) {}
  std::string name() const override { return "cpu"; }
  absl::Status Run(absl::Span<const FfnGroup> groups) override {
    runner_.Run(groups, pool_);
    return absl::OkStatus();
  }

 private:
  ThreadPool* pool_;
  GroupedFfnRunner runner_;
};

}  // namespace moe

#endif  // MOE_CORE_EXPERT_BACKEND_H_
