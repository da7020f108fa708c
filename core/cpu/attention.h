// Causal grouped-query attention over the paged KV cache.
#ifndef MOE_CORE_CPU_ATTENTION_H_
#define MOE_CORE_CPU_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/kv_cache.h"
#include "core/thread_pool.h"

namespace moe::cpu {

// New tokens of one sequence whose K/V rows are already written to the cache
// at positions [first_pos, first_pos + tokens).
struct AttentionSegment {
  const float* q = nullptr;  // [tokens, ldq], heads of head_dim each
  int64_t ldq = 0;
  float* out = nullptr;      // [tokens, ldo]
  int64_t ldo = 0;
  int64_t tokens = 0;
  int first_pos = 0;
  absl::Span<const int32_t> block_table;  // covers first_pos + tokens
};

struct AttentionParams {
  int layer = 0;
  int num_heads = 0;
  int num_kv_heads = 0;  // divides num_heads; head h uses kv head h / group
  int head_dim = 0;
  float scale = 0.0f;     // usually 1 / sqrt(head_dim)
  int sliding_window = 0; // > 0: a token at p attends to (p - window, p]
};

// For every segment, token t (at position p = first_pos + t) and head h:
// out = softmax(q·K[0..p] * scale) · V[0..p] (float32 throughout). All
// segments and heads are done in one pool dispatch.
void PagedAttention(absl::Span<const AttentionSegment> segments,
                    const AttentionParams& params, const KvCache& cache,
                    ThreadPool* pool);

// Writes K and V rows ([tokens, kv_dim] each, row stride ld) for positions
// [first_pos, first_pos + tokens) of a sequence into its blocks.
void WriteKv(KvCache& cache, int layer, absl::Span<const int32_t> block_table,
             int first_pos, int64_t tokens, const float* k, const float* v,
             int64_t ld);

}  // namespace moe::cpu

#endif  // MOE_CORE_CPU_ATTENTION_H_
