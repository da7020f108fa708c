// The attention block of Multi-head Latent Attention (DeepSeek-V2/V3) on the
// CPU, for the Transformer: projections, rope, the latent KV cache write and
// absorbed attention (core/cpu/mla_attention.h).
//
// Per token and layer the cache holds kv_a_layernorm(compressed KV)
// (kv_lora_rank floats) and the rotated rope key (qk_rope_head_dim floats):
// 4 * (kv_lora_rank + qk_rope_head_dim) bytes, against
// 4 * heads * (qk_head_dim + v_head_dim) for the expanded K and V.
// kv_b_proj is folded in: W_UK into each head's query (q_nope · W_UK), W_UV
// into the output (out_latent · W_UV^T), so nothing per cached token is
// ever expanded.
#ifndef MOE_CORE_MLA_ATTENTION_H_
#define MOE_CORE_MLA_ATTENTION_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/forward_pass.h"
#include "core/kv_cache.h"
#include "core/model_weights.h"
#include "core/rope_scaling.h"
#include "core/thread_pool.h"

namespace moe {

// Not thread-safe: driven by the Transformer's executor thread.
class MlaAttention {
 public:
  // Pointers are borrowed. Keeps a transposed copy of every loaded layer's
  // W_UK (heads * kv_lora_rank * qk_nope_head_dim values, in the
  // checkpoint's dtype).
  MlaAttention(const ModelWeights* weights, KvCache* cache, ThreadPool* pool);

  // normed: input_layernorm of the pass's hidden states [tokens, H], laid
  // out as `segments` say, at `positions`. Writes the tokens' latent rows of
  // `layer` into the cache (their blocks are already appended) and sets
  // out [tokens, H] = o_proj(attention).
  void Forward(int layer, const float* normed, int64_t tokens,
               const int32_t* positions, absl::Span<const BatchSegment> segments,
               float* out);

 private:
  const ModelWeights* weights_;
  const ModelConfig& config_;
  KvCache* cache_;
  ThreadPool* pool_;
  RopeTable rope_;
  float scale_;

  // [layer]: storage of W_UK^T, and per head a view [kv_lora, nope] of it.
  std::vector<std::vector<char>> uk_t_storage_;
  std::vector<std::vector<TensorView>> uk_t_;
  // [layer][head]: W_UV, a view [v_head_dim, kv_lora] into kv_b_proj.
  std::vector<std::vector<TensorView>> uv_;

  // Scratch, reused across calls.
  std::vector<float> q_a_, q_, latent_, q_latent_, out_latent_, heads_out_;
};

}  // namespace moe

#endif  // MOE_CORE_MLA_ATTENTION_H_
