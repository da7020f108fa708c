// The forward pass of a decoder over a paged KV cache, as an interface: the
// CPU backend (Transformer, core/transformer.h) and the CUDA backend
// (core/cuda/cuda_transformer.h) implement it, and the engine and the
// attention server hold one through CreateForwardPass (core/backends.h).
#ifndef MOE_CORE_FORWARD_PASS_H_
#define MOE_CORE_FORWARD_PASS_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/kv_cache.h"
#include "core/model_config.h"
#include "core/moe_executor.h"

namespace moe {

// New tokens of one sequence for one forward pass. They are appended after
// the tokens the sequence already has in the KV cache.
struct SequenceChunk {
  KvCache::SeqId seq = 0;
  absl::Span<const int32_t> tokens;
  bool want_logits = false;  // logits of the chunk's last token
};

// The chunks of one pass as laid out in its batch: chunk i's tokens are
// rows [first_row, first_row + tokens), at positions [first_pos, ...).
struct BatchSegment {
  int64_t first_row = 0;
  int64_t tokens = 0;
  int first_pos = 0;
  std::vector<int32_t> block_table;  // after the append
  bool want_logits = false;
};

// What every backend's Begin does first: validates `chunks` (errors as
// ForwardPass::Forward, nothing appended on error), appends their tokens to
// `cache`, and fills `segments` (one per chunk) and `positions` (one per
// token of the batch).
absl::Status AppendChunksToCache(const ModelConfig& config, KvCache& cache,
                                 absl::Span<const SequenceChunk> chunks,
                                 std::vector<BatchSegment>* segments,
                                 std::vector<int32_t>* positions);

// Not thread-safe: one executor thread drives a ForwardPass.
class ForwardPass {
 public:
  virtual ~ForwardPass() = default;

  // Runs the chunks as one batch: appends their K/V to the cache and returns
  // the logits [chunks wanting logits, vocab] in chunk order. Every chunk's
  // sequence must exist in the cache; RESOURCE_EXHAUSTED (nothing appended)
  // if the cache cannot hold the new tokens; INVALID_ARGUMENT for a token id
  // outside the vocabulary or a position past max_position_embeddings.
  // `after_layer_kv(l)`, when set, runs as soon as layer l's K/V of every
  // chunk is in the cache (before the layer's FFN), so that a caller can
  // ship it while the rest of the pass computes.
  virtual absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const SequenceChunk> chunks,
      const std::function<void(int layer)>& after_layer_kv = nullptr);

  // Forward in steps, so that several passes over disjoint sequences
  // (micro-batches) can interleave: Begin; then for each layer in order
  // AttentionLayer, StartFfn, FinishFfn; then End. StartFfn sends a MoE
  // layer's routed experts off (MoeExecutor::StartMoe) and computes the
  // shared expert meanwhile; FinishFfn waits for them. Another pass's steps
  // may run between any two of these. Errors as Forward; after an error the
  // pass must not go on.
  virtual absl::Status Begin(absl::Span<const SequenceChunk> chunks) = 0;
  virtual absl::Status AttentionLayer(int layer) = 0;
  virtual absl::Status StartFfn(int layer) = 0;
  virtual absl::Status FinishFfn(int layer) = 0;
  virtual absl::StatusOr<std::vector<float>> End() = 0;
  // Gives up the pass after an error: waits for a MoE step still in flight
  // (its result is dropped), so that the MoeExecutor holds nothing of it.
  virtual void Abandon() = 0;
  // Number of layers of the model (what Forward iterates over).
  virtual int num_layers() const = 0;

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

 protected:
  // Records in failed_chunks_ the chunks (segments) owning `failed` rows.
  void RecordFailedTokens(const MoeTokenFailures& failed,
                          absl::Span<const BatchSegment> segments);

  std::vector<FailedChunk> failed_chunks_;  // of this pass, ascending chunk
};

}  // namespace moe

#endif  // MOE_CORE_FORWARD_PASS_H_
