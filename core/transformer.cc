#include "core/transformer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/cpu/attention.h"
#include "core/cpu/kernels.h"
#include "core/status_macros.h"

namespace moe {

Transformer::Transformer(const ModelWeights* weights, KvCache* cache,
                         MoeExecutor* moe, ThreadPool* pool)
    : weights_(weights),
      config_(weights->config),
      cache_(cache),
      moe_(moe),
      pool_(pool) {
  if (config_.uses_mla()) {
    mla_ = std::make_unique<MlaAttention>(weights, cache, pool);
  }
}

absl::Status Transformer::Begin(absl::Span<const SequenceChunk> chunks) {
  const int64_t h = config_.hidden_size;
  moe_pending_ = false;
  failed_chunks_.clear();
  RETURN_IF_ERROR(
      AppendChunksToCache(config_, *cache_, chunks, &segments_, &positions_));
  total_ = static_cast<int64_t>(positions_.size());
  hidden_.resize(total_ * h);
  for (size_t c = 0; c < chunks.size(); ++c) {
    const SequenceChunk& chunk = chunks[c];
    const int64_t row = segments_[c].first_row;
    for (size_t t = 0; t < chunk.tokens.size(); ++t) {
      const void* src = weights_->embed_tokens.Row(chunk.tokens[t]);
      float* dst = hidden_.data() + (row + t) * h;
      for (int64_t i = 0; i < h; ++i) {
        dst[i] = LoadAsFloat(src, weights_->embed_tokens.dtype, i);
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> Transformer::End() {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size;
  // Final norm and lm_head for the last token of chunks that want logits.
  int64_t wanted = 0;
  normed_.resize(std::max<int64_t>(total_, 1) * h);
  for (const BatchSegment& s : segments_) {
    if (!s.want_logits) continue;
    cpu::RmsNorm(hidden_.data() + (s.first_row + s.tokens - 1) * h, 1, h, h,
                 weights_->final_norm, c.rms_norm_eps,
                 normed_.data() + wanted * h);
    ++wanted;
  }
  std::vector<float> logits(wanted * c.vocab_size);
  cpu::MatMul(normed_.data(), wanted, weights_->lm_head, logits.data(), pool_);
  return logits;
}

absl::Status Transformer::AttentionLayer(int l) {
  return AttentionBlock(l, total_);
}

absl::Status Transformer::AttentionBlock(int l, int64_t tokens) {
  const ModelConfig& c = config_;
  const LayerWeights& lw = weights_->layers[l];
  const AttentionWeights& a = lw.attention;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();

  normed_.resize(tokens * h);
  cpu::RmsNorm(hidden_.data(), tokens, h, h, lw.input_norm, c.rms_norm_eps,
               normed_.data());
  if (mla_) {
    proj_.resize(tokens * h);
    mla_->Forward(l, normed_.data(), tokens, positions_.data(), segments_,
                  proj_.data());
    for (int64_t i = 0; i < tokens * h; ++i) hidden_[i] += proj_[i];
    return absl::OkStatus();
  }
  q_.resize(tokens * qd);
  k_.resize(tokens * kvd);
  v_.resize(tokens * kvd);
  const cpu::MatMulJob jobs[] = {
      {normed_.data(), tokens, h, &a.q, q_.data(), qd},
      {normed_.data(), tokens, h, &a.k, k_.data(), kvd},
      {normed_.data(), tokens, h, &a.v, v_.data(), kvd},
  };
  cpu::MatMul(jobs, pool_);
  if (c.qkv_bias) {
    cpu::AddBias(q_.data(), tokens, qd, a.q_bias);
    cpu::AddBias(k_.data(), tokens, kvd, a.k_bias);
    cpu::AddBias(v_.data(), tokens, kvd, a.v_bias);
  }
  switch (c.qk_norm) {
    case QkNorm::kNone:
      break;
    case QkNorm::kWholeProjection:
      cpu::RmsNorm(q_.data(), tokens, qd, qd, a.q_norm, c.rms_norm_eps, q_.data());
      cpu::RmsNorm(k_.data(), tokens, kvd, kvd, a.k_norm, c.rms_norm_eps, k_.data());
      break;
    case QkNorm::kPerHead:
      cpu::RmsNorm(q_.data(), tokens * c.num_heads, c.head_dim, c.head_dim,
                   a.q_norm, c.rms_norm_eps, q_.data());
      cpu::RmsNorm(k_.data(), tokens * c.num_kv_heads, c.head_dim, c.head_dim,
                   a.k_norm, c.rms_norm_eps, k_.data());
      break;
  }
  if (c.clip_qkv > 0) {
    cpu::Clamp(q_.data(), tokens * qd, c.clip_qkv);
    cpu::Clamp(k_.data(), tokens * kvd, c.clip_qkv);
    cpu::Clamp(v_.data(), tokens * kvd, c.clip_qkv);
  }
  cpu::ApplyRope(q_.data(), tokens, qd, c.num_heads, c.head_dim,
                 positions_.data(), c.rope_theta);
  cpu::ApplyRope(k_.data(), tokens, kvd, c.num_kv_heads, c.head_dim,
                 positions_.data(), c.rope_theta);

  attn_.resize(tokens * qd);
  std::vector<cpu::AttentionSegment> segs;
  segs.reserve(segments_.size());
  for (const BatchSegment& s : segments_) {
    cpu::WriteKv(*cache_, l, s.block_table, s.first_pos, s.tokens,
                 k_.data() + s.first_row * kvd, v_.data() + s.first_row * kvd,
                 kvd);
    segs.push_back({q_.data() + s.first_row * qd, qd,
                    attn_.data() + s.first_row * qd, qd, s.tokens, s.first_pos,
                    s.block_table});
  }
  cpu::AttentionParams params;
  params.layer = l;
  params.num_heads = c.num_heads;
  params.num_kv_heads = c.num_kv_heads;
  params.head_dim = c.head_dim;
  params.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  params.sliding_window = c.sliding_window;
  cpu::PagedAttention(segs, params, *cache_, pool_);

  proj_.resize(tokens * h);
  cpu::MatMul(attn_.data(), tokens, a.o, proj_.data(), pool_);
  if (c.o_bias) cpu::AddBias(proj_.data(), tokens, h, a.o_bias);
  for (int64_t i = 0; i < tokens * h; ++i) hidden_[i] += proj_[i];
  return absl::OkStatus();
}

absl::Status Transformer::StartFfn(int l) {
  const ModelConfig& c = config_;
  const LayerWeights& lw = weights_->layers[l];
  const int64_t h = c.hidden_size;
  const int64_t tokens = total_;

  normed_.resize(tokens * h);
  cpu::RmsNorm(hidden_.data(), tokens, h, h, lw.post_attention_norm,
               c.rms_norm_eps, normed_.data());
  mlp_.resize(tokens * h);
  if (!c.IsMoeLayer(l)) {
    const FfnGroup group{&*lw.dense_mlp, normed_.data(), tokens, mlp_.data()};
    ffn_runner_.Run(absl::MakeConstSpan(&group, 1), pool_);
    for (int64_t i = 0; i < tokens * h; ++i) hidden_[i] += mlp_[i];
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(moe_handle_,
                   moe_->StartMoe(l, normed_.data(), tokens, mlp_.data()));
  moe_pending_ = true;
  // The shared expert needs no expert server: computed while the routed
  // experts run elsewhere.
  if (lw.shared_expert) {
    shared_.resize(tokens * h);
    const FfnGroup group{&*lw.shared_expert, normed_.data(), tokens,
                         shared_.data()};
    ffn_runner_.Run(absl::MakeConstSpan(&group, 1), pool_);
    if (!lw.shared_expert_gate.empty()) {
      shared_gate_.resize(tokens);
      cpu::MatMul(normed_.data(), tokens, lw.shared_expert_gate,
                  shared_gate_.data(), nullptr);
    }
  }
  return absl::OkStatus();
}

void Transformer::Abandon() {
  if (!moe_pending_) return;
  moe_pending_ = false;
  moe_->WaitMoe(moe_handle_, nullptr).IgnoreError();
}

absl::Status Transformer::FinishFfn(int l) {
  if (!moe_pending_) return absl::OkStatus();
  moe_pending_ = false;
  const LayerWeights& lw = weights_->layers[l];
  const int64_t h = config_.hidden_size;
  const int64_t tokens = total_;
  if (moe_->WaitsOnRemote()) pool_->Park();
  MoeTokenFailures failed;
  RETURN_IF_ERROR(moe_->WaitMoe(moe_handle_, &failed));
  if (!failed.tokens.empty()) RecordFailedTokens(failed, segments_);
  // The same additions in the same order as a single-process pass: the
  // routed experts, then the gated shared expert.
  for (int64_t i = 0; i < tokens * h; ++i) hidden_[i] += mlp_[i];
  if (lw.shared_expert) {
    const bool gated = !lw.shared_expert_gate.empty();  // else DeepSeek's
    for (int64_t t = 0; t < tokens; ++t) {
      const float g = gated ? cpu::Sigmoid(shared_gate_[t]) : 1.0f;
      for (int64_t i = 0; i < h; ++i) hidden_[t * h + i] += g * shared_[t * h + i];
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
