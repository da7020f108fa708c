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
#include <map>
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
  // With no experts: start hosting nothing (`--experts=none`) and host
  // what LoadExperts brings (the router assigns it). CPU only.
  bool start_empty = false;
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

  const ModelConfig& config() const { return config_; }
  // The compute backend's name ("cpu", "cuda:0 (NVIDIA H100 ...)").
  std::string backend_name() const { return backend_->name(); }
  // What is hosted now, ascending by (layer, expert).
  std::vector<std::pair<int, int>> HostedExperts() const;
  bool Hosts(int layer, int expert) const;

  // INVALID_ARGUMENT naming a pair outside the model's MoE layers/experts.
  absl::Status CheckExperts(const std::set<std::pair<int, int>>& experts) const;

  // Loads these (layer, expert) pairs from the checkpoint while serving
  // (batches keep running; a load runs on the caller's thread, one at a
  // time) and hosts them once loaded; returns how many were not hosted
  // before. INVALID_ARGUMENT naming a layer or expert outside the model or
  // a dense layer; the checkpoint's errors; FAILED_PRECONDITION on a CUDA
  // backend (its experts are uploaded once at start) or when the checkpoint
  // changed.
  absl::StatusOr<int> LoadExperts(const std::set<std::pair<int, int>>& experts);
  // Stops hosting these pairs; returns how many were hosted. Batches already
  // running finish with the weights they hold; later ones naming an
  // unloaded expert are refused (INVALID_ARGUMENT naming the group). Errors
  // as LoadExperts.
  absl::StatusOr<int> UnloadExperts(
      const std::set<std::pair<int, int>>& experts);

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

  // Pins the calling thread where the executor runs (the first of
  // `pin_cpus`) and lets this thread's Submit compute a batch itself, as
  // an unpinned engine's callers do: for a thread that only waits for
  // requests and hands them to Submit (the shared-memory channel). Nothing
  // changes on a CUDA backend, whose batches stay on the executor. Errors:
  // the CPU could not be pinned (the thread then hands batches over as
  // before).
  absl::Status PinCallerAsExecutor();

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
  // Hosts every expert of `weights` (replacing any already hosted).
  void AddHostedLocked(std::shared_ptr<const ModelWeights> weights)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(hosted_mu_);
  // Runs `batch` and its callback, then clears running_ (which the caller
  // set) and parks the compute threads when nothing is queued.
  void RunAndReport(Batch& batch);

  std::string model_dir_;
  bool cuda_ = false;
  ModelConfig config_;
  // (layer, expert) -> weights; each entry shares ownership of the load it
  // came from (its checkpoint mappings). Declared before the backend, which
  // may refer to the weights until it is destroyed.
  mutable absl::Mutex hosted_mu_;
  std::map<std::pair<int, int>, std::shared_ptr<const FfnWeights>> hosted_
      ABSL_GUARDED_BY(hosted_mu_);
  absl::Mutex load_mu_;  // one LoadExperts at a time
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<ExpertFfnBackend> backend_;  // executor thread only
  absl::Mutex mu_;
  std::deque<Batch> queue_ ABSL_GUARDED_BY(mu_);
  // A batch is being computed (by the executor or inline by Submit's
  // caller): the backend and the pool have one user at a time.
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool run_inline_ = false;  // CPU backends: Submit may compute in place
  bool cuda_backend_ = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread executor_;
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVER_EXPERT_ENGINE_H_
