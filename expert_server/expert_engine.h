// The compute side of an expert server: the FFN weights of the (layer,
// expert) pairs placed here, and one executor thread that runs grouped
// SwiGLU FFNs for queued batches (a CPU batch that finds nothing queued or
// running is computed by the submitting thread instead). Knows nothing of
// gRPC.
#ifndef MOE_EXPERT_SERVER_EXPERT_ENGINE_H_
#define MOE_EXPERT_SERVER_EXPERT_ENGINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "core/backends.h"
#include "core/expert_backend.h"
#include "core/model_weights.h"
#include "core/thread_pool.h"

namespace moe {

struct ExpertEngineOptions {
  std::string model_dir;
  // (layer, expert) pairs to host; empty with all_experts = every expert.
  std::set<std::pair<int, int>> experts;
  bool all_experts = false;
  int num_threads = 0;  // compute threads; 0 = one per core
  // How long idle compute threads spin before sleeping (see ThreadPool).
  int spin_microseconds = ThreadPool::kServerSpinMicroseconds;
  // CPUs for the compute threads (core/cpu_affinity.h); empty: unpinned.
  // Pinned, batches are always computed on the executor thread.
  std::vector<int> pin_cpus;
  // Where the FFNs run: the CPU, or a CUDA device (the experts' weights are
  // uploaded to it as BF16 at load).
  DeviceSpec device;
};

// One group of tokens for one hosted expert. `x` is [tokens, hidden] and
// `out` receives [tokens, hidden]; both are owned by the submitter and must
// stay valid until the completion callback runs.
struct ExpertWork {
  int layer = 0;
  int expert = 0;
  const float* x = nullptr;
  int64_t tokens = 0;
  float* out = nullptr;
};

// Thread-safe: Submit may be called from any thread.
class ExpertEngine {
 public:
  // Loads only the selected experts (and nothing else) of the checkpoint.
  static absl::StatusOr<std::unique_ptr<ExpertEngine>> Load(
      const ExpertEngineOptions& options);
  // Finishes queued batches, then stops the executor.
  ~ExpertEngine();

  const ModelConfig& config() const { return weights_.config; }
  // The compute backend's name ("cpu", "cuda:0 (NVIDIA H100 ...)").
  std::string backend_name() const { return backend_->name(); }
  std::vector<std::pair<int, int>> HostedExperts() const;
  bool Hosts(int layer, int expert) const;

  // INVALID_ARGUMENT naming the group (index, layer, expert) that this
  // server does not host.
  absl::Status Validate(absl::Span<const ExpertWork> work) const;

  // Called on the executor thread once a batch is done: OK after every
  // group's output is written, or the error that stopped it; and the seconds
  // spent computing.
  using DoneCallback = std::function<void(absl::Status, double)>;
  // Queues a validated batch. On an unpinned CPU backend with nothing
  // queued or running, computes it on the calling thread instead (and runs
  // `done` there before returning): one thread hand-off fewer per call.
  void Submit(std::vector<ExpertWork> work, DoneCallback done);

  // Work whose rows are not in host memory (the NCCL data plane receives
  // them on the device): runs `task(backend, groups)` on the executor
  // thread instead of the backend's Run, in queue order with Submit's
  // batches; `groups` are `work`'s groups with their weights (x and out
  // null; groups without tokens left out). `work` must pass Validate; `done`
  // as for Submit.
  using BackendTask = std::function<absl::Status(
      ExpertFfnBackend& backend, absl::Span<const FfnGroup> groups)>;
  void SubmitTask(std::vector<ExpertWork> work, BackendTask task,
                  DoneCallback done);

 private:
  ExpertEngine() = default;
  void ExecutorLoop();
  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  struct Batch {
    std::vector<ExpertWork> work;
    BackendTask task;  // null: the backend's Run
    DoneCallback done;
  };
  absl::Status Run(const Batch& batch);
  // Runs `batch` and its callback, then clears running_ (which the caller
  // set) and parks the compute threads when nothing is queued.
  void RunAndReport(Batch& batch);

  ModelWeights weights_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<ExpertFfnBackend> backend_;  // executor thread only
  absl::Mutex mu_;
  std::deque<Batch> queue_ ABSL_GUARDED_BY(mu_);
  // A batch is being computed (by the executor or inline by Submit's
  // caller): the backend and the pool have one user at a time.
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool run_inline_ = false;  // CPU backends: Submit may compute in place
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread executor_;
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVER_EXPERT_ENGINE_H_
