// The single-process engine: a whole model (all experts) in one process, with
// a paged KV cache and in-process MoE execution. The services reuse its parts;
// this class is the reference the cluster is compared against.
#ifndef MOE_CORE_ENGINE_H_
#define MOE_CORE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/backends.h"
#include "core/forward_pass.h"
#include "core/gating.h"
#include "core/kv_cache.h"
#include "core/local_moe_executor.h"
#include "core/model_weights.h"
#include "core/thread_pool.h"

namespace moe {

struct EngineOptions {
  std::string model_dir;
  int num_threads = 0;            // 0: one per core
  int kv_block_size = 16;         // tokens per KV block
  int64_t kv_cache_bytes = int64_t{1} << 30;
  bool populate_weights = true;   // fault weights in at load
  // cpu, or a CUDA device: the whole forward pass (routed experts included)
  // runs there, with the KV rows in device memory (kv_cache_bytes of it).
  DeviceSpec device;
};

// Not thread-safe: one thread drives an Engine.
class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Load(
      const EngineOptions& options);

  const ModelConfig& config() const { return weights_.config; }
  const ModelWeights& weights() const { return weights_; }
  KvCache& kv_cache() { return *cache_; }
  ThreadPool& pool() { return *pool_; }

  // Creates / releases a sequence's KV state.
  absl::Status StartSequence(KvCache::SeqId seq) {
    return cache_->AddSequence(seq);
  }
  void EndSequence(KvCache::SeqId seq) { cache_->FreeSequence(seq); }

  // See ForwardPass::Forward.
  absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const SequenceChunk> chunks) {
    return forward_->Forward(chunks);
  }

  // Observer of every routing decision (layer, routing), for tests and
  // statistics; pass nullptr to remove. FAILED_PRECONDITION on a CUDA
  // device, where routing stays on the device.
  absl::Status SetRoutingObserver(LocalMoeExecutor::RoutingObserver observer) {
    if (moe_ == nullptr) {
      return absl::FailedPreconditionError(
          "routing observers need the CPU backend");
    }
    moe_->SetRoutingObserver(std::move(observer));
    return absl::OkStatus();
  }

 private:
  Engine() = default;
  ModelWeights weights_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<LocalMoeExecutor> moe_;  // null on a CUDA device
  std::unique_ptr<ForwardPass> forward_;
};

}  // namespace moe

#endif  // MOE_CORE_ENGINE_H_
