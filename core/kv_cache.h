// Paged KV cache: a pool of fixed-size blocks and per-sequence block tables.
//
// Storage is float32, one contiguous region per layer laid out as
// [block][k|v][slot][kv_head][head_dim], so one block of one layer is one
// contiguous byte range (what a layer-by-layer transfer ships).
// Thread-safety: allocation, free and accounting are thread-safe; reading and
// writing a sequence's K/V rows is done by the one executor that owns it.
#ifndef MOE_CORE_KV_CACHE_H_
#define MOE_CORE_KV_CACHE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/model_config.h"

namespace moe {

struct KvCacheShape {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;  // tokens per block

  // The shape of `config`'s KV cache with `block_size` tokens per block.
  static KvCacheShape ForModel(const ModelConfig& config, int block_size) {
    return {config.num_layers, config.num_kv_heads, config.head_dim,
            block_size};
  }

  // Bytes one block occupies across all layers.
  int64_t BytesPerBlock() const {
    return int64_t{num_layers} * 2 * block_size * num_kv_heads * head_dim *
           int64_t{sizeof(float)};
  }
};

class KvCache {
 public:
  using SeqId = int64_t;

  // A cache of as many blocks as fit in `memory_bytes`. INVALID_ARGUMENT for
  // a non-positive shape or a budget below one block.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(
      const KvCacheShape& shape, int64_t memory_bytes);

  const KvCacheShape& shape() const { return shape_; }
  int num_blocks() const { return num_blocks_; }
  int num_free_blocks() const;
  // Fraction of blocks in use, 0..1.
  double usage() const;

  // Registers a sequence with no tokens. ALREADY_EXISTS if present.
  absl::Status AddSequence(SeqId seq);
  // Grows `seq` to hold `num_tokens` more tokens, allocating blocks as
  // needed; all or nothing. RESOURCE_EXHAUSTED when the pool is short,
  // NOT_FOUND for an unknown sequence.
  absl::Status Append(SeqId seq, int num_tokens);
  // Returns the sequence's blocks to the pool. Unknown ids are ignored.
  void FreeSequence(SeqId seq);
  bool HasSequence(SeqId seq) const;

  int NumTokens(SeqId seq) const;
  // Block ids of the sequence in order; valid until the next Append/Free of
  // the same sequence.
  std::vector<int32_t> BlockTable(SeqId seq) const;
  // Number of blocks needed for `num_tokens` tokens.
  int BlocksFor(int64_t num_tokens) const {
    return static_cast<int>((num_tokens + shape_.block_size - 1) /
                            shape_.block_size);
  }

  // Row of K (or V) for (layer, block, slot): num_kv_heads * head_dim floats.
  float* KRow(int layer, int32_t block, int slot) {
    return layer_base(layer) + BlockOffset(block) + int64_t{slot} * row_floats_;
  }
  float* VRow(int layer, int32_t block, int slot) {
    return KRow(layer, block, slot) + int64_t{shape_.block_size} * row_floats_;
  }
  const float* KRow(int layer, int32_t block, int slot) const {
    return const_cast<KvCache*>(this)->KRow(layer, block, slot);
  }
  const float* VRow(int layer, int32_t block, int slot) const {
    return const_cast<KvCache*>(this)->VRow(layer, block, slot);
  }
  // One block of one layer, K then V: BlockBytesPerLayer() contiguous bytes.
  float* BlockData(int layer, int32_t block) {
    return layer_base(layer) + BlockOffset(block);
  }
  int64_t BlockBytesPerLayer() const {
    return 2 * int64_t{shape_.block_size} * row_floats_ * sizeof(float);
  }

 private:
  KvCache(const KvCacheShape& shape, int num_blocks);

 public:
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

 private:
  float* layer_base(int layer) { return storage_ + layer * layer_floats_; }
  int64_t BlockOffset(int32_t block) const {
    return int64_t{block} * 2 * shape_.block_size * row_floats_;
  }

  struct Sequence {
    std::vector<int32_t> blocks;
    int num_tokens = 0;
  };

  KvCacheShape shape_;
  int num_blocks_;
  int64_t row_floats_;    // num_kv_heads * head_dim
  int64_t layer_floats_;  // num_blocks * 2 * block_size * row_floats
  float* storage_ = nullptr;  // anonymous mapping, zero-filled lazily
  size_t storage_bytes_ = 0;

  mutable absl::Mutex mu_;
  std::vector<int32_t> free_blocks_ ABSL_GUARDED_BY(mu_);
  std::map<SeqId, Sequence> sequences_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_CORE_KV_CACHE_H_
