// The compute side of an expert server: the FFN weights of the (layer,
// expert) pairs placed here, and one executor thread that runs grouped
// SwiGLU FFNs for queued batches. Knows nothing of gRPC.
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
#include "core/expert_ffn.h"
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
  std::vector<std::pair<int, int>> HostedExperts() const;
  bool Hosts(int layer, int expert) const;

  // INVALID_ARGUMENT naming the group (index, layer, expert) that this
  // server does not host.
  absl::Status Validate(absl::Span<const ExpertWork> work) const;

  // Called on the executor thread once a batch is done: OK after every
  // group's output is written, or the error that stopped it; and the seconds
  // spent computing.
  using DoneCallback = std::function<void(absl::Status, double)>;
  // Queues a validated batch.
  void Submit(std::vector<ExpertWork> work, DoneCallback done);

 private:
  ExpertEngine() = default;
  void ExecutorLoop();
  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Run(absl::Span<const ExpertWork> work);

  struct Batch {
    std::vector<ExpertWork> work;
    DoneCallback done;
  };

  ModelWeights weights_;
  std::unique_ptr<ThreadPool> pool_;
  GroupedFfnRunner runner_;  // executor thread only
  absl::Mutex mu_;
  std::deque<Batch> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread executor_;
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVER_EXPERT_ENGINE_H_
