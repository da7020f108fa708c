// The non-expert forward pass of a decoder: embeddings, attention over the
// paged KV cache, norms, dense MLPs, shared experts and lm_head, with the
// routed-expert step delegated to a MoeExecutor.
#ifndef MOE_CORE_TRANSFORMER_H_
#define MOE_CORE_TRANSFORMER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/expert_ffn.h"
#include "core/forward_pass.h"
#include "core/kv_cache.h"
#include "core/mla_attention.h"
#include "core/model_weights.h"
#include "core/moe_executor.h"
#include "core/thread_pool.h"

namespace moe {

// The CPU backend's forward pass. Not thread-safe: one executor thread
// drives a Transformer.
class Transformer final : public ForwardPass {
 public:
  // All pointers are borrowed and must outlive the Transformer. `weights`
  // must hold the non-expert weights.
  Transformer(const ModelWeights* weights, KvCache* cache, MoeExecutor* moe,
              ThreadPool* pool);

  absl::Status Begin(absl::Span<const SequenceChunk> chunks) override;
  absl::Status AttentionLayer(int layer) override;
  absl::Status StartFfn(int layer) override;
  absl::Status FinishFfn(int layer) override;
  absl::StatusOr<std::vector<float>> End() override;
  void Abandon() override;
  int num_layers() const override { return config_.num_layers; }

 private:
  absl::Status AttentionBlock(int layer, int64_t tokens);

  const ModelWeights* weights_;
  const ModelConfig& config_;
  KvCache* cache_;
  MoeExecutor* moe_;
  ThreadPool* pool_;
  GroupedFfnRunner ffn_runner_;
  std::unique_ptr<MlaAttention> mla_;  // DeepSeek's attention, else null

  // Per-forward state, reused across calls.
  std::vector<BatchSegment> segments_;
  std::vector<int32_t> positions_;
  int64_t total_ = 0;  // tokens of the pass
  std::vector<float> hidden_, normed_, q_, k_, v_, attn_, proj_, mlp_, shared_,
      shared_gate_;
  // The MoE step in flight between StartFfn and FinishFfn, if any.
  bool moe_pending_ = false;
  uint64_t moe_handle_ = 0;
};

}  // namespace moe

#endif  // MOE_CORE_TRANSFORMER_H_
