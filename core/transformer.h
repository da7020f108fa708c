// The non-expert forward pass of a decoder: embeddings, attention over the
// paged KV cache, norms, dense MLPs, shared experts and lm_head, with the
// routed-expert step delegated to a MoeExecutor.
#ifndef MOE_CORE_TRANSFORMER_H_
#define MOE_CORE_TRANSFORMER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/expert_ffn.h"
#include "core/kv_cache.h"
#include "core/model_weights.h"
#include "core/moe_executor.h"
#include "core/thread_pool.h"

namespace moe {

// New tokens of one sequence for one forward pass. They are appended after
// the tokens the sequence already has in the KV cache.
struct SequenceChunk {
  KvCache::SeqId seq = 0;
  absl::Span<const int32_t> tokens;
  bool want_logits = false;  // logits of the chunk's last token
};

// Not thread-safe: one executor thread drives a Transformer.
class Transformer {
 public:
  // All pointers are borrowed and must outlive the Transformer. `weights`
  // must hold the non-expert weights.
  Transformer(const ModelWeights* weights, KvCache* cache, MoeExecutor* moe,
              ThreadPool* pool);

  // Runs the chunks as one batch: appends their K/V to the cache and returns
  // the logits [chunks wanting logits, vocab] in chunk order. Every chunk's
  // sequence must exist in the cache; RESOURCE_EXHAUSTED (nothing appended)
  // if the cache cannot hold the new tokens; INVALID_ARGUMENT for a token id
  // outside the vocabulary or a position past max_position_embeddings.
  // `after_layer_kv(l)`, when set, runs as soon as layer l's K/V of every
  // chunk is in the cache (before the layer's FFN), so that a caller can
  // ship it while the rest of the pass computes.
  absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const SequenceChunk> chunks,
      const std::function<void(int layer)>& after_layer_kv = nullptr);

  // Forward in steps, so that several Transformers over disjoint sequences
  // (micro-batches) can interleave: Begin; then for each layer in order
  // AttentionLayer, StartFfn, FinishFfn; then End. StartFfn sends a MoE
  // layer's routed experts off (MoeExecutor::StartMoe) and computes the
  // shared expert meanwhile; FinishFfn waits for them. Another
  // Transformer's steps may run between any two of these. Errors as
  // Forward; after an error the pass must not go on.
  absl::Status Begin(absl::Span<const SequenceChunk> chunks);
  absl::Status AttentionLayer(int layer);
  absl::Status StartFfn(int layer);
  absl::Status FinishFfn(int layer);
  absl::StatusOr<std::vector<float>> End();
  // Gives up the pass after an error: waits for a MoE step still in flight
  // (its result is dropped), so that the MoeExecutor holds nothing of it.
  void Abandon();

  // Chunks of the pass (indices into Begin's chunks) some of whose tokens
  // the MoeExecutor could not compute (MoeTokenFailures), each with the
  // first such failure, in chunk order. Their logits and this pass's K/V
  // are unusable: their sequences must fail. The other chunks are exact.
  // Valid after End, until the next Begin.
  struct FailedChunk {
    size_t chunk = 0;
    absl::Status status;
  };
  const std::vector<FailedChunk>& failed_chunks() const {
    return failed_chunks_;
  }

 private:
  absl::Status AttentionBlock(int layer, int64_t tokens);


  const ModelWeights* weights_;
  const ModelConfig& config_;
  KvCache* cache_;
  MoeExecutor* moe_;
  ThreadPool* pool_;
  GroupedFfnRunner ffn_runner_;

  // Per-forward state, reused across calls.
  struct Segment {
    int64_t first_row;  // row in the batch
    int64_t tokens;
    int first_pos;
    std::vector<int32_t> block_table;
    bool want_logits;
  };
  std::vector<Segment> segments_;
  std::vector<int32_t> positions_;
  int64_t total_ = 0;  // tokens of the pass
  std::vector<float> hidden_, normed_, q_, k_, v_, attn_, proj_, mlp_, shared_,
      shared_gate_;
  // The MoE step in flight between StartFfn and FinishFfn, if any.
  bool moe_pending_ = false;
  uint64_t moe_handle_ = 0;
  std::vector<FailedChunk> failed_chunks_;  // of this pass, ascending chunk

  // Records the chunks owning `failed` rows in failed_chunks_.
  void RecordFailedTokens(const MoeTokenFailures& failed);
};

}  // namespace moe

#endif  // MOE_CORE_TRANSFORMER_H_
