#include "core/mla_attention.h"

#include <cstring>

#include "core/cpu/kernels.h"
#include "core/cpu/mla_attention.h"

namespace moe {

MlaAttention::MlaAttention(const ModelWeights* weights, KvCache* cache,
                           ThreadPool* pool)
    : weights_(weights),
      config_(weights->config),
      cache_(cache),
      pool_(pool),
      rope_(MlaRopeTable(weights->config)),
      scale_(MlaSoftmaxScale(weights->config)) {
  const MlaConfig& m = config_.mla;
  const int heads = config_.num_heads;
  const int64_t nope = m.qk_nope_head_dim, v = m.v_head_dim,
                lora = m.kv_lora_rank;
  uk_t_storage_.resize(config_.num_layers);
  uk_t_.resize(config_.num_layers);
  uv_.resize(config_.num_layers);
  for (int l = 0; l < config_.num_layers; ++l) {
    const TensorView& kv_b = weights->layers[l].attention.kv_b;
    if (kv_b.empty()) continue;
    const size_t elem = DTypeSize(kv_b.dtype);
    std::vector<char>& storage = uk_t_storage_[l];
    storage.resize(static_cast<size_t>(heads) * lora * nope * elem);
    const char* src = static_cast<const char*>(kv_b.data);
    for (int h = 0; h < heads; ++h) {
      char* dst = storage.data() + static_cast<size_t>(h) * lora * nope * elem;
      for (int64_t i = 0; i < nope; ++i) {
        const char* row = src + ((h * (nope + v) + i) * lora) * elem;
        for (int64_t c = 0; c < lora; ++c) {
          std::memcpy(dst + (c * nope + i) * elem, row + c * elem, elem);
        }
      }
      TensorView uk;
      uk.data = dst;
      uk.dtype = kv_b.dtype;
      uk.shape = {lora, nope};
      uk_t_[l].push_back(uk);
      TensorView uv;
      uv.data = src + ((h * (nope + v) + nope) * lora) * elem;
      uv.dtype = kv_b.dtype;
      uv.shape = {v, lora};
      uv_[l].push_back(uv);
    }
  }
}

void MlaAttention::Forward(int layer, const float* normed, int64_t tokens,
                           const int32_t* positions,
                           absl::Span<const BatchSegment> segments,
                           float* out) {
  const ModelConfig& c = config_;
  const MlaConfig& m = c.mla;
  const AttentionWeights& a = weights_->layers[layer].attention;
  const int heads = c.num_heads;
  const int64_t h = c.hidden_size, qk = m.qk_head_dim(),
                nope = m.qk_nope_head_dim, lora = m.kv_lora_rank,
                latent_dim = m.latent_dim(), vd = m.v_head_dim;
  const int64_t qd = heads * qk;

  // Projections: q (directly, or through the q LoRA) and the KV latent.
  q_.resize(tokens * qd);
  latent_.resize(tokens * latent_dim);
  if (m.q_lora_rank == 0) {
    const cpu::MatMulJob jobs[] = {
        {normed, tokens, h, &a.q, q_.data(), qd},
        {normed, tokens, h, &a.kv_a, latent_.data(), latent_dim},
    };
    cpu::MatMul(jobs, pool_);
  } else {
    q_a_.resize(tokens * m.q_lora_rank);
    const cpu::MatMulJob jobs[] = {
        {normed, tokens, h, &a.q_a, q_a_.data(), m.q_lora_rank},
        {normed, tokens, h, &a.kv_a, latent_.data(), latent_dim},
    };
    cpu::MatMul(jobs, pool_);
    cpu::RmsNorm(q_a_.data(), tokens, m.q_lora_rank, m.q_lora_rank, a.q_a_norm,
                 c.rms_norm_eps, q_a_.data());
    cpu::MatMul(q_a_.data(), tokens, a.q_b, q_.data(), pool_);
  }
  // The cached latent: normalised compressed KV, then the rotated rope key.
  cpu::RmsNorm(latent_.data(), tokens, lora, latent_dim, a.kv_a_norm,
               c.rms_norm_eps, latent_.data());
  cpu::ApplyInterleavedRope(q_.data(), tokens, qd, heads, qk, nope,
                            rope_.inv_freq, rope_.cos_sin_scale, positions);
  cpu::ApplyInterleavedRope(latent_.data(), tokens, latent_dim, 1, 0, lora,
                            rope_.inv_freq, rope_.cos_sin_scale, positions);
  for (const BatchSegment& s : segments) {
    cpu::WriteLatent(*cache_, layer, s.block_table, s.first_pos, s.tokens,
                     latent_.data() + s.first_row * latent_dim, latent_dim);
  }

  // Absorb W_UK: q_latent[t, head] = q_nope[t, head] · W_UK[head].
  q_latent_.resize(tokens * heads * lora);
  std::vector<cpu::MatMulJob> jobs;
  jobs.reserve(heads);
  for (int hd = 0; hd < heads; ++hd) {
    jobs.push_back({q_.data() + hd * qk, tokens, qd, &uk_t_[layer][hd],
                    q_latent_.data() + hd * lora, heads * lora});
  }
  cpu::MatMul(jobs, pool_);

  out_latent_.resize(tokens * heads * lora);
  std::vector<cpu::MlaSegment> segs;
  segs.reserve(segments.size());
  for (const BatchSegment& s : segments) {
    segs.push_back({q_latent_.data() + s.first_row * heads * lora,
                    q_.data() + s.first_row * qd + nope,
                    out_latent_.data() + s.first_row * heads * lora, s.tokens,
                    s.first_pos, s.block_table});
  }
  cpu::MlaParams params;
  params.layer = layer;
  params.num_heads = heads;
  params.kv_lora_rank = static_cast<int>(lora);
  params.rope_dim = m.qk_rope_head_dim;
  params.ld_q_latent = heads * lora;
  params.ld_q_pe = qd;
  params.q_pe_head_stride = qk;
  params.ld_out = heads * lora;
  params.scale = scale_;
  cpu::MlaPagedAttention(segs, params, *cache_, pool_);

  // Absorb W_UV: heads_out[t, head] = out_latent[t, head] · W_UV[head]^T.
  heads_out_.resize(tokens * heads * vd);
  jobs.clear();
  for (int hd = 0; hd < heads; ++hd) {
    jobs.push_back({out_latent_.data() + hd * lora, tokens, heads * lora,
                    &uv_[layer][hd], heads_out_.data() + hd * vd, heads * vd});
  }
  cpu::MatMul(jobs, pool_);
  cpu::MatMul(heads_out_.data(), tokens, a.o, out, pool_);
}

}  // namespace moe
