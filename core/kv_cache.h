// Paged KV cache: a pool of fixed-size blocks and per-sequence block tables,
// with prefix caching.
//
// Storage is float32, one contiguous region per layer laid out as
// [block][k|v][slot][kv_head][head_dim], so one block of one layer is one
// contiguous byte range (what a layer-by-layer transfer ships). A
// Multi-head Latent Attention cache (DeepSeek) has one plane instead of two:
// [block][slot][latent], the latent being the normalised compressed KV
// (kv_lora_rank) followed by the rotated rope key (qk_rope_head_dim), read
// through KRow; such a cache has no V rows.
//
// Prefix caching: a full block of a prompt can be registered under the hash
// of its tokens and of every token before it (PrefixBlockHashes). A later
// sequence whose prompt starts with the same blocks shares them (read only:
// a shared block is always full, and a sequence only writes past its own
// tokens). A registered block that no sequence holds stays cached until the
// pool needs it: allocation takes free blocks first, then evicts the least
// recently released cached block.
//
// Thread-safety: allocation, free and accounting are thread-safe; reading and
// writing a sequence's K/V rows is done by the one executor that owns it.
#ifndef MOE_CORE_KV_CACHE_H_
#define MOE_CORE_KV_CACHE_H_

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/model_config.h"

namespace moe {

struct KvCacheShape {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;  // tokens per block
  int planes = 2;       // 2: K and V; 1: an MLA latent (no V)

  // The shape of `config`'s KV cache with `block_size` tokens per block.
  static KvCacheShape ForModel(const ModelConfig& config, int block_size) {
    if (config.uses_mla()) {
      return {config.num_layers, 1, config.mla.latent_dim(), block_size, 1};
    }
    return {config.num_layers, config.num_kv_heads, config.head_dim,
            block_size, 2};
  }

  // Bytes one token occupies in one layer.
  int64_t BytesPerTokenPerLayer() const {
    return int64_t{planes} * num_kv_heads * head_dim *
           int64_t{sizeof(float)};
  }
  // Bytes one block of one layer occupies (what a transfer ships per block
  // and layer).
  int64_t BlockBytesPerLayer() const {
    return BytesPerTokenPerLayer() * block_size;
  }
  // Bytes one block occupies across all layers.
  int64_t BytesPerBlock() const { return BlockBytesPerLayer() * num_layers; }
};

// Chained hashes of the full blocks of `tokens`: hash i covers tokens
// [0, (i + 1) * block_size), so equal hashes mean equal prefixes (up to
// 64-bit collisions). Deterministic across processes and builds: the
// gateway and the attention servers compute the same values.
std::vector<uint64_t> PrefixBlockHashes(absl::Span<const int32_t> tokens,
                                        int block_size);

class KvCache {
 public:
  using SeqId = int64_t;

  // A cache of as many blocks as fit in `memory_bytes`. INVALID_ARGUMENT for
  // a non-positive shape or a budget below one block.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(
      const KvCacheShape& shape, int64_t memory_bytes);

  const KvCacheShape& shape() const { return shape_; }
  int num_blocks() const { return num_blocks_; }
  // Blocks no sequence holds: never used, or cached and evictable.
  int num_free_blocks() const;
  // Of those, blocks that hold a registered prefix.
  int num_cached_blocks() const;
  // Fraction of blocks held by sequences, 0..1.
  double usage() const;

  // Registers a sequence with no tokens. ALREADY_EXISTS if present.
  absl::Status AddSequence(SeqId seq);
  // Registers a sequence that starts with the longest run of leading
  // `prefix_hashes` found in the cache: those blocks are shared (one more
  // holder each) and the sequence starts with their tokens. Returns that
  // number of tokens (0 when nothing matched). ALREADY_EXISTS if present.
  absl::StatusOr<int> AddSequenceWithPrefix(
      SeqId seq, absl::Span<const uint64_t> prefix_hashes);
  // Registers the sequence's first blocks under `prefix_hashes` (block i
  // under prefix_hashes[i]) so that later sequences can share them. Only
  // full blocks may be registered; a hash already registered (by another
  // block) keeps its block. NOT_FOUND for an unknown sequence,
  // INVALID_ARGUMENT for more hashes than full blocks.
  absl::Status RegisterPrefix(SeqId seq,
                              absl::Span<const uint64_t> prefix_hashes);
  // The number of leading `prefix_hashes` cached now (what
  // AddSequenceWithPrefix would match).
  int CachedPrefixBlocks(absl::Span<const uint64_t> prefix_hashes) const;
  // Grows `seq` to hold `num_tokens` more tokens, allocating blocks as
  // needed; all or nothing. RESOURCE_EXHAUSTED when the pool is short,
  // NOT_FOUND for an unknown sequence.
  absl::Status Append(SeqId seq, int num_tokens);
  // Releases the sequence's blocks: each goes back to the pool, or stays
  // cached when registered, once no other sequence holds it. Unknown ids
  // are ignored.
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
  // Precondition: shape().planes == 2.
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
  int64_t BlockBytesPerLayer() const { return shape_.BlockBytesPerLayer(); }

 private:
  KvCache(const KvCacheShape& shape, int num_blocks);

 public:
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

 private:
  float* layer_base(int layer) { return storage_ + layer * layer_floats_; }
  int64_t BlockOffset(int32_t block) const {
    return int64_t{block} * shape_.planes * shape_.block_size * row_floats_;
  }

  struct Sequence {
    std::vector<int32_t> blocks;
    int num_tokens = 0;
  };

  // A free block, evicting the least recently released cached block when
  // no block is free. Precondition: one of the two exists.
  int32_t TakeBlockLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseBlockLocked(int32_t block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int AvailableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  KvCacheShape shape_;
  int num_blocks_;
  int64_t row_floats_;    // num_kv_heads * head_dim
  int64_t layer_floats_;  // num_blocks * planes * block_size * row_floats
  float* storage_ = nullptr;  // anonymous mapping, zero-filled lazily
  size_t storage_bytes_ = 0;

  mutable absl::Mutex mu_;
  std::vector<int32_t> free_blocks_ ABSL_GUARDED_BY(mu_);
  std::map<SeqId, Sequence> sequences_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> holders_ ABSL_GUARDED_BY(mu_);  // [block]: sequences
  // Registered prefixes: hash -> block, and back.
  absl::flat_hash_map<uint64_t, int32_t> cached_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int32_t, uint64_t> hash_of_ ABSL_GUARDED_BY(mu_);
  // Cached blocks no sequence holds, least recently released first, with
  // each block's position for O(1) removal.
  std::list<int32_t> evictable_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int32_t, std::list<int32_t>::iterator> evictable_pos_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_CORE_KV_CACHE_H_
