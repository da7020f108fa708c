// Attention over a paged KV cache kept in device memory.
//
// DeviceKvStorage holds the K/V rows of a KvCache's blocks on the device,
// with the host KvCache's layout (core/kv_cache.h): per layer, blocks of
// [k|v][slot][kv_head][head_dim] float32, so block b of layer l is one
// contiguous range and a block id means the same thing on host and device.
// The host KvCache keeps allocating blocks and building block tables; only
// the rows live here.
#ifndef MOE_CORE_CUDA_PAGED_ATTENTION_H_
#define MOE_CORE_CUDA_PAGED_ATTENTION_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/cuda/device_buffer.h"
#include "core/kv_cache.h"

namespace moe::cuda {

class DeviceKvStorage {
 public:
  // Device rows for `num_blocks` blocks of `shape` (one allocation, zeroed).
  // RESOURCE_EXHAUSTED naming the bytes when the device cannot hold them.
  static absl::StatusOr<std::unique_ptr<DeviceKvStorage>> Create(
      const KvCacheShape& shape, int num_blocks);

  const KvCacheShape& shape() const { return shape_; }
  int num_blocks() const { return num_blocks_; }
  // Start of layer `layer`'s blocks.
  float* layer_data(int layer);
  const float* layer_data(int layer) const;
  // Bytes of one block of one layer (KvCache::BlockBytesPerLayer).
  int64_t block_bytes_per_layer() const;

 private:
  DeviceKvStorage(const KvCacheShape& shape, int num_blocks)
      : shape_(shape), num_blocks_(num_blocks) {}
  KvCacheShape shape_;
  int num_blocks_;
  DeviceBuffer<float> rows_;
};

// Writes the K and V rows of `tokens` new tokens (row stride ld, kv_dim =
// num_kv_heads * head_dim values each) of layer `layer`: token t goes to
// block slot_of[t] / block_size, slot slot_of[t] % block_size. slot_of is a
// device array [tokens].
absl::Status WriteKv(DeviceKvStorage& storage, int layer, const float* k,
                     const float* v, int64_t ld, const int32_t* slot_of,
                     int64_t tokens, cudaStream_t stream);

// One batch of new tokens over several sequences (all device arrays).
// Token t of the batch belongs to sequence seq_of[t], is at position
// pos_of[t], and its sequence's block table is
// block_tables[table_start[seq_of[t]] ...]. Its K/V (and that of every
// earlier position of its sequence) are already written.
struct AttentionBatch {
  const float* q = nullptr;  // [tokens, ldq], num_heads heads of head_dim
  int64_t ldq = 0;
  float* out = nullptr;      // [tokens, ldo]
  int64_t ldo = 0;
  int64_t tokens = 0;
  const int32_t* seq_of = nullptr;
  const int32_t* pos_of = nullptr;
  const int32_t* block_tables = nullptr;
  const int32_t* table_start = nullptr;
  int max_pos = 0;           // the largest pos_of (host-known), sizes launches
  bool decode_only = false;  // every sequence has exactly one new token
};

struct AttentionParams {
  int layer = 0;
  int num_heads = 0;
  int num_kv_heads = 0;   // divides num_heads; head h reads kv head h / group
  int head_dim = 0;       // <= 256
  float scale = 0.0f;     // usually 1 / sqrt(head_dim)
  int sliding_window = 0; // > 0: a token at p attends to (p - window, p]
};

// Causal GQA: out = softmax(q·K[first..p] * scale) · V[first..p] for every
// token and head, float32 throughout (as cpu::PagedAttention). Decode
// batches (decode_only) use a kernel that splits long contexts across
// thread blocks; prefill batches a kernel that shares each K/V tile among
// the query tokens of a sequence.
absl::Status PagedAttention(const AttentionBatch& batch,
                            const AttentionParams& params,
                            const DeviceKvStorage& storage,
                            cudaStream_t stream);

}  // namespace moe::cuda

#endif  // MOE_CORE_CUDA_PAGED_ATTENTION_H_
