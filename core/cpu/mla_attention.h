// Multi-head Latent Attention (DeepSeek) over a one-plane latent KV cache
// (KvCacheShape::planes == 1), in the absorbed form: a head's query is
// folded into the latent space (q_nope · W_UK), scores are taken against the
// cached latent directly, and the output stays latent (W_UV is applied by
// the caller). The expanded K/V are never materialised.
#ifndef MOE_CORE_CPU_MLA_ATTENTION_H_
#define MOE_CORE_CPU_MLA_ATTENTION_H_

#include <cstdint>

#include "absl/types/span.h"
#include "core/kv_cache.h"
#include "core/thread_pool.h"

namespace moe::cpu {

// New tokens of one sequence whose latent rows are already in the cache at
// positions [first_pos, first_pos + tokens). Row r of the segment is at
// q_latent + r * params.ld_q_latent etc.
struct MlaSegment {
  const float* q_latent = nullptr;  // [tokens][heads][kv_lora]
  const float* q_pe = nullptr;      // [tokens][heads] of rope floats
  float* out_latent = nullptr;      // [tokens][heads][kv_lora]
  int64_t tokens = 0;
  int first_pos = 0;
  absl::Span<const int32_t> block_table;  // covers first_pos + tokens
};

struct MlaParams {
  int layer = 0;
  int num_heads = 0;
  int kv_lora_rank = 0;
  int rope_dim = 0;
  int64_t ld_q_latent = 0;   // floats between tokens of q_latent
  int64_t ld_q_pe = 0;       // floats between tokens of q_pe
  int64_t q_pe_head_stride = 0;  // floats between heads of q_pe
  int64_t ld_out = 0;        // floats between tokens of out_latent
  float scale = 0.0f;        // softmax scale
};

// For every segment, token t (at position p = first_pos + t) and head h:
// s[j] = (q_latent[t,h] · c[j] + q_pe[t,h] · k_pe[j]) * scale for j <= p,
// out_latent[t,h] = softmax(s) · c[0..p], where the cached latent row of
// position j is [c (kv_lora) | k_pe (rope)]. Float32 throughout; one pool
// dispatch for all segments and heads.
void MlaPagedAttention(absl::Span<const MlaSegment> segments,
                       const MlaParams& params, const KvCache& cache,
                       ThreadPool* pool);

// Writes latent rows ([tokens, latent_dim], row stride ld) for positions
// [first_pos, first_pos + tokens) of a sequence into its blocks.
void WriteLatent(KvCache& cache, int layer,
                 absl::Span<const int32_t> block_table, int first_pos,
                 int64_t tokens, const float* latent, int64_t ld);

// Rotates the rope part of every head in place with DeepSeek's interleaved
// pairing: pair i is (x[2i], x[2i+1]), turned by position * inv_freq[i],
// both components scaled by cos_sin_scale. This equals Hugging Face's
// de-interleave + rotate_half up to a fixed permutation of the rope
// dimensions shared by queries and keys, so every q·k is the same.
// x: [tokens, ld]; head h's rope part starts at offset + h * head_stride.
void ApplyInterleavedRope(float* x, int64_t tokens, int64_t ld, int64_t heads,
                          int64_t head_stride, int64_t offset,
                          absl::Span<const float> inv_freq,
                          float cos_sin_scale, const int32_t* positions);

}  // namespace moe::cpu

#endif  // MOE_CORE_CPU_MLA_ATTENTION_H_
