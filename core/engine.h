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
#include "core/gating.h"
#include "core/kv_cache.h"
#include "core/local_moe_executor.h"
#include "core/model_weights.h"
#include "core/thread_pool.h"
#include "core/transformer.h"

namespace moe {

struct EngineOptions {
  std::string model_dir;
  int num_threads = 0;            // 0: one per core
  int kv_block_size = 16;         // tokens per KV block
  int64_t kv_cache_bytes = int64_t{1} << 30;
  bool populate_weights = true;   // fault weights in at load
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

  // See Transformer::Forward.
  absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const SequenceChunk> chunks) {
    return transformer_->Forward(chunks);
  }

  // Observer of every routing decision (layer, routing), for tests and
  // statistics; pass nullptr to remove.
  void SetRoutingObserver(LocalMoeExecutor::RoutingObserver observer) {
    moe_->SetRoutingObserver(std::move(observer));
  }

 private:
  Engine() = default;
  ModelWeights weights_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<LocalMoeExecutor> moe_;
  std::unique_ptr<Transformer> transformer_;
};

}  // namespace moe

#endif  // MOE_CORE_ENGINE_H_
