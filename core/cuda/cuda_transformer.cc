#include "core/cuda/cuda_transformer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_status.h"
#include "core/cuda/device_weights.h"
#include "core/gating.h"
#include "core/status_macros.h"

namespace moe::cuda {

absl::StatusOr<std::unique_ptr<CudaTransformer>> CudaTransformer::Create(
    int ordinal, const ModelWeights* weights, KvCache* cache,
    MoeExecutor* moe) {
  std::unique_ptr<CudaTransformer> pass(
      new CudaTransformer(ordinal, weights, cache, moe));
  RETURN_IF_ERROR(pass->UploadWeights());
  ASSIGN_OR_RETURN(pass->kv_, DeviceKvStorage::Create(cache->shape(),
                                                      cache->num_blocks()));
  return pass;
}

CudaTransformer::~CudaTransformer() {
  Abandon();
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
}

absl::Status CudaTransformer::UploadWeights() {
  const ModelConfig& c = config_;
  // Every FFN the pass runs itself: dense MLPs, shared experts, and the
  // routed experts when no MoeExecutor takes them.
  std::vector<const FfnWeights*> ffns;
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = weights_->layers[l];
    if (lw.dense_mlp) ffns.push_back(&*lw.dense_mlp);
    if (lw.shared_expert) ffns.push_back(&*lw.shared_expert);
    if (moe_ == nullptr && c.IsMoeLayer(l)) {
      if (static_cast<int>(lw.experts.size()) != c.num_experts ||
          lw.router_gate.NumElements() == 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            "layer ", l, ": the GPU pass runs the routed experts itself and "
            "needs the router gate and all ", c.num_experts,
            " experts; ", lw.experts.size(), " are loaded"));
      }
      for (const auto& entry : lw.experts) ffns.push_back(&entry.second);
    }
  }
  ASSIGN_OR_RETURN(ffn_, CudaExpertFfn::Create(ordinal_, ffns));
  stream_ = ffn_->stream();
  ASSIGN_OR_RETURN(Gemm gemm, Gemm::Create(stream_));
  gemm_ = std::make_unique<Gemm>(std::move(gemm));

  ASSIGN_OR_RETURN(embed_, UploadAsBf16(weights_->embed_tokens));
  ASSIGN_OR_RETURN(final_norm_, UploadAsBf16(weights_->final_norm));
  ASSIGN_OR_RETURN(lm_head_, UploadAsBf16(weights_->lm_head));
  layers_.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = weights_->layers[l];
    const AttentionWeights& a = lw.attention;
    DeviceLayer& d = layers_[l];
    ASSIGN_OR_RETURN(d.input_norm, UploadAsBf16(lw.input_norm));
    ASSIGN_OR_RETURN(d.post_norm, UploadAsBf16(lw.post_attention_norm));
    ASSIGN_OR_RETURN(d.q, UploadAsBf16(a.q));
    ASSIGN_OR_RETURN(d.k, UploadAsBf16(a.k));
    ASSIGN_OR_RETURN(d.v, UploadAsBf16(a.v));
    ASSIGN_OR_RETURN(d.o, UploadAsBf16(a.o));
    ASSIGN_OR_RETURN(d.q_bias, UploadAsBf16(a.q_bias));
    ASSIGN_OR_RETURN(d.k_bias, UploadAsBf16(a.k_bias));
    ASSIGN_OR_RETURN(d.v_bias, UploadAsBf16(a.v_bias));
    ASSIGN_OR_RETURN(d.o_bias, UploadAsBf16(a.o_bias));
    ASSIGN_OR_RETURN(d.q_norm, UploadAsBf16(a.q_norm));
    ASSIGN_OR_RETURN(d.k_norm, UploadAsBf16(a.k_norm));
    ASSIGN_OR_RETURN(d.router_gate, UploadAsBf16(lw.router_gate));
    ASSIGN_OR_RETURN(d.shared_gate, UploadAsBf16(lw.shared_expert_gate));
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return absl::OkStatus();
}

absl::Status CudaTransformer::ReserveForTokens(int64_t tokens) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t n = std::max<int64_t>(tokens, 1);
  const int64_t routed = n * std::max(c.num_experts_per_tok, 1);
  for (auto [buffer, count] :
       {std::pair{&hidden_, n * h}, {&normed_, n * h}, {&q_, n * qd},
        {&k_, n * kvd}, {&v_, n * kvd}, {&attn_, n * qd}, {&mlp_, n * h},
        {&shared_, n * h}, {&shared_gate_, n},
        {&router_logits_, n * std::max(c.num_experts, 1)},
        {&routing_weights_, routed}, {&expert_out_f32_, routed * h}}) {
    RETURN_IF_ERROR(buffer->Reserve(count));
  }
  for (auto [buffer, count] :
       {std::pair{&x_bf16_, n * std::max(h, qd)}, {&attn_bf16_, n * qd},
        {&ffn_out_bf16_, n * h}, {&gathered_, routed * h},
        {&expert_out_, routed * h}}) {
    RETURN_IF_ERROR(buffer->Reserve(count));
  }
  RETURN_IF_ERROR(routing_experts_.Reserve(routed));
  return absl::OkStatus();
}

absl::Status CudaTransformer::Begin(absl::Span<const SequenceChunk> chunks) {
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  pending_ = PendingMoe::kNone;
  failed_chunks_.clear();
  RETURN_IF_ERROR(
      AppendChunksToCache(config_, *cache_, chunks, &segments_, &positions_));
  total_ = static_cast<int64_t>(positions_.size());
  RETURN_IF_ERROR(ReserveForTokens(total_));

  // Metadata: ids, pos, slot_of, seq_of [total] each, table_start
  // [segments], then the block tables back to back.
  const int bs = cache_->shape().block_size;
  const int64_t t_count = total_;
  const int64_t s_count = static_cast<int64_t>(segments_.size());
  int64_t table_entries = 0;
  for (const BatchSegment& s : segments_) table_entries += s.block_table.size();
  host_meta_.assign(4 * t_count + s_count + table_entries, 0);
  int32_t* ids = host_meta_.data();
  int32_t* pos = ids + t_count;
  int32_t* slot_of = pos + t_count;
  int32_t* seq_of = slot_of + t_count;
  int32_t* table_start = seq_of + t_count;
  int32_t* tables = table_start + s_count;
  decode_only_ = true;
  max_pos_ = 0;
  int64_t table_at = 0;
  for (int64_t s = 0; s < s_count; ++s) {
    const BatchSegment& seg = segments_[s];
    decode_only_ = decode_only_ && seg.tokens == 1;
    table_start[s] = static_cast<int32_t>(table_at);
    std::copy(seg.block_table.begin(), seg.block_table.end(),
              tables + table_at);
    table_at += seg.block_table.size();
    for (int64_t t = 0; t < seg.tokens; ++t) {
      const int64_t row = seg.first_row + t;
      const int p = positions_[row];
      ids[row] = chunks[s].tokens[t];
      pos[row] = p;
      slot_of[row] = seg.block_table[p / bs] * bs + p % bs;
      seq_of[row] = static_cast<int32_t>(s);
      max_pos_ = std::max(max_pos_, p);
    }
  }
  RETURN_IF_ERROR(meta_.Reserve(static_cast<int64_t>(host_meta_.size())));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      meta_.data(), host_meta_.data(), host_meta_.size() * sizeof(int32_t),
      cudaMemcpyHostToDevice, stream_));
  ids_ = meta_.data();
  pos_ = ids_ + t_count;
  slot_of_ = pos_ + t_count;
  seq_of_ = slot_of_ + t_count;
  table_start_ = seq_of_ + t_count;
  tables_ = table_start_ + s_count;
  return Embed(embed_.data(), ids_, total_, config_.hidden_size,
               hidden_.data(), stream_);
}

absl::Status CudaTransformer::AttentionLayer(int l) {
  const ModelConfig& c = config_;
  const DeviceLayer& d = layers_[l];
  const int64_t t = total_;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const float eps = c.rms_norm_eps;

  RETURN_IF_ERROR(RmsNormToBf16(hidden_.data(), t, h, h, d.input_norm.data(),
                                eps, x_bf16_.data(), stream_));
  RETURN_IF_ERROR(gemm_->Bf16ToF32(x_bf16_.data(), t, h, d.q.data(), qd,
                                   q_.data(), qd));
  RETURN_IF_ERROR(gemm_->Bf16ToF32(x_bf16_.data(), t, h, d.k.data(), kvd,
                                   k_.data(), kvd));
  RETURN_IF_ERROR(gemm_->Bf16ToF32(x_bf16_.data(), t, h, d.v.data(), kvd,
                                   v_.data(), kvd));
  if (c.qkv_bias) {
    RETURN_IF_ERROR(AddBias(q_.data(), t, qd, qd, d.q_bias.data(), stream_));
    RETURN_IF_ERROR(AddBias(k_.data(), t, kvd, kvd, d.k_bias.data(), stream_));
    RETURN_IF_ERROR(AddBias(v_.data(), t, kvd, kvd, d.v_bias.data(), stream_));
  }
  switch (c.qk_norm) {
    case QkNorm::kNone:
      break;
    case QkNorm::kWholeProjection:
      RETURN_IF_ERROR(RmsNorm(q_.data(), t, qd, qd, d.q_norm.data(), eps,
                              q_.data(), stream_));
      RETURN_IF_ERROR(RmsNorm(k_.data(), t, kvd, kvd, d.k_norm.data(), eps,
                              k_.data(), stream_));
      break;
    case QkNorm::kPerHead:
      RETURN_IF_ERROR(RmsNorm(q_.data(), t * c.num_heads, c.head_dim,
                              c.head_dim, d.q_norm.data(), eps, q_.data(),
                              stream_));
      RETURN_IF_ERROR(RmsNorm(k_.data(), t * c.num_kv_heads, c.head_dim,
                              c.head_dim, d.k_norm.data(), eps, k_.data(),
                              stream_));
      break;
  }
  if (c.clip_qkv > 0) {
    RETURN_IF_ERROR(Clamp(q_.data(), t * qd, c.clip_qkv, stream_));
    RETURN_IF_ERROR(Clamp(k_.data(), t * kvd, c.clip_qkv, stream_));
    RETURN_IF_ERROR(Clamp(v_.data(), t * kvd, c.clip_qkv, stream_));
  }
  RETURN_IF_ERROR(ApplyRope(q_.data(), t, qd, c.num_heads, c.head_dim, pos_,
                            c.rope_theta, stream_));
  RETURN_IF_ERROR(ApplyRope(k_.data(), t, kvd, c.num_kv_heads, c.head_dim,
                            pos_, c.rope_theta, stream_));
  RETURN_IF_ERROR(WriteKv(*kv_, l, k_.data(), v_.data(), kvd, slot_of_, t,
                          stream_));

  AttentionBatch batch;
  batch.q = q_.data();
  batch.ldq = qd;
  batch.out = attn_.data();
  batch.ldo = qd;
  batch.tokens = t;
  batch.seq_of = seq_of_;
  batch.pos_of = pos_;
  batch.block_tables = tables_;
  batch.table_start = table_start_;
  batch.max_pos = max_pos_;
  batch.decode_only = decode_only_;
  AttentionParams params;
  params.layer = l;
  params.num_heads = c.num_heads;
  params.num_kv_heads = c.num_kv_heads;
  params.head_dim = c.head_dim;
  params.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  params.sliding_window = c.sliding_window;
  RETURN_IF_ERROR(PagedAttention(batch, params, *kv_, stream_));

  // hidden += attn · o^T (+ o_bias), the GEMM accumulating into hidden.
  RETURN_IF_ERROR(ToBf16(attn_.data(), t * qd, attn_bf16_.data(), stream_));
  RETURN_IF_ERROR(gemm_->Bf16ToF32(attn_bf16_.data(), t, qd, d.o.data(), h,
                                   hidden_.data(), h, /*accumulate=*/true));
  if (c.o_bias) {
    RETURN_IF_ERROR(AddBias(hidden_.data(), t, h, h, d.o_bias.data(), stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaTransformer::StartFfn(int l) {
  const ModelConfig& c = config_;
  const LayerWeights& lw = weights_->layers[l];
  const DeviceLayer& d = layers_[l];
  const int64_t t = total_;
  const int64_t h = c.hidden_size;

  if (!c.IsMoeLayer(l)) {
    RETURN_IF_ERROR(RmsNormToBf16(hidden_.data(), t, h, h, d.post_norm.data(),
                                  c.rms_norm_eps, x_bf16_.data(), stream_));
    const DeviceFfnGroup group{&*lw.dense_mlp, x_bf16_.data(), t,
                               ffn_out_bf16_.data()};
    RETURN_IF_ERROR(ffn_->RunOnDevice(absl::MakeConstSpan(&group, 1)));
    RETURN_IF_ERROR(FromBf16(ffn_out_bf16_.data(), t * h, mlp_.data(), stream_));
    return AddInPlace(hidden_.data(), mlp_.data(), t * h, stream_);
  }

  RETURN_IF_ERROR(RmsNorm(hidden_.data(), t, h, h, d.post_norm.data(),
                          c.rms_norm_eps, normed_.data(), stream_));
  RETURN_IF_ERROR(ToBf16(normed_.data(), t * h, x_bf16_.data(), stream_));
  if (moe_ != nullptr) {
    // The routed experts run elsewhere: the normed rows go to the host.
    RETURN_IF_ERROR(host_normed_.Reserve(t * h));
    RETURN_IF_ERROR(host_mlp_.Reserve(t * h));
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        host_normed_.data(), normed_.data(), t * h * sizeof(float),
        cudaMemcpyDeviceToHost, stream_));
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    ASSIGN_OR_RETURN(moe_handle_, moe_->StartMoe(l, host_normed_.data(), t,
                                                 host_mlp_.data()));
    pending_ = PendingMoe::kHost;
  } else {
    RETURN_IF_ERROR(RoutedExpertsOnDevice(l));
    pending_ = PendingMoe::kDevice;
  }
  // The shared expert and its gate, meanwhile.
  if (lw.shared_expert) {
    const DeviceFfnGroup group{&*lw.shared_expert, x_bf16_.data(), t,
                               ffn_out_bf16_.data()};
    RETURN_IF_ERROR(ffn_->RunOnDevice(absl::MakeConstSpan(&group, 1)));
    RETURN_IF_ERROR(
        FromBf16(ffn_out_bf16_.data(), t * h, shared_.data(), stream_));
    RETURN_IF_ERROR(gemm_->Bf16ToF32(x_bf16_.data(), t, h,
                                     d.shared_gate.data(), 1,
                                     shared_gate_.data(), 1));
  }
  return absl::OkStatus();
}

absl::Status CudaTransformer::RoutedExpertsOnDevice(int l) {
  const ModelConfig& c = config_;
  const LayerWeights& lw = weights_->layers[l];
  const int64_t t = total_;
  const int64_t h = c.hidden_size;
  const int k = c.num_experts_per_tok;
  const int e = c.num_experts;

  RETURN_IF_ERROR(gemm_->Bf16ToF32(x_bf16_.data(), t, h,
                                   layers_[l].router_gate.data(), e,
                                   router_logits_.data(), e));
  RETURN_IF_ERROR(TopKGating(router_logits_.data(), t, e, k,
                             TopKIsRenormalised(c), routing_experts_.data(),
                             routing_weights_.data(), stream_));
  host_experts_.resize(t * k);
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      host_experts_.data(), routing_experts_.data(), t * k * sizeof(int32_t),
      cudaMemcpyDeviceToHost, stream_));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));

  // Rows grouped by expert in ascending expert order, tokens in order
  // within an expert (as GroupByExpert). routing_meta: the gathered row of
  // each token's rows [t * k] (row_of_slot), then the source token of each
  // gathered row [t * k].
  std::vector<int64_t> count(e + 1, 0);
  for (int32_t expert : host_experts_) {
    if (expert < 0 || expert >= e) {
      return absl::InternalError(absl::StrCat(
          "layer ", l, ": gating produced expert id ", expert, " outside [0, ",
          e, ")"));
    }
    ++count[expert + 1];
  }
  for (int i = 0; i < e; ++i) count[i + 1] += count[i];  // starts
  const int64_t rows = t * k;
  host_routing_meta_.assign(2 * rows, 0);
  int32_t* row_of_slot = host_routing_meta_.data();
  int32_t* source = row_of_slot + rows;
  std::vector<int64_t> next(count.begin(), count.end() - 1);
  for (int64_t token = 0; token < t; ++token) {
    for (int j = 0; j < k; ++j) {
      const int32_t expert = host_experts_[token * k + j];
      const int64_t row = next[expert]++;
      row_of_slot[token * k + j] = static_cast<int32_t>(row);
      source[row] = static_cast<int32_t>(token);
    }
  }
  RETURN_IF_ERROR(routing_meta_.Reserve(2 * rows));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      routing_meta_.data(), host_routing_meta_.data(),
      2 * rows * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  RETURN_IF_ERROR(GatherRowsToBf16(normed_.data(), routing_meta_.data() + rows,
                                   rows, h, gathered_.data(), stream_));
  std::vector<DeviceFfnGroup> groups;
  for (int expert = 0; expert < e; ++expert) {
    const int64_t first = count[expert], n = count[expert + 1] - first;
    if (n == 0) continue;
    groups.push_back({&lw.experts.at(expert), gathered_.data() + first * h, n,
                      expert_out_.data() + first * h});
  }
  RETURN_IF_ERROR(ffn_->RunOnDevice(groups));
  RETURN_IF_ERROR(FromBf16(expert_out_.data(), rows * h,
                           expert_out_f32_.data(), stream_));
  return CombineExperts(expert_out_f32_.data(), routing_meta_.data(),
                        routing_weights_.data(), t, k, h, mlp_.data(),
                        stream_);
}

absl::Status CudaTransformer::FinishFfn(int l) {
  if (pending_ == PendingMoe::kNone) return absl::OkStatus();
  const PendingMoe pending = std::exchange(pending_, PendingMoe::kNone);
  const int64_t t = total_;
  const int64_t h = config_.hidden_size;
  if (pending == PendingMoe::kHost) {
    MoeTokenFailures failed;
    RETURN_IF_ERROR(moe_->WaitMoe(moe_handle_, &failed));
    if (!failed.tokens.empty()) RecordFailedTokens(failed, segments_);
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(mlp_.data(), host_mlp_.data(),
                                             t * h * sizeof(float),
                                             cudaMemcpyHostToDevice, stream_));
  }
  // The same additions in the same order as the CPU pass: the routed
  // experts, then the gated shared expert.
  RETURN_IF_ERROR(AddInPlace(hidden_.data(), mlp_.data(), t * h, stream_));
  if (weights_->layers[l].shared_expert) {
    RETURN_IF_ERROR(AddSigmoidGated(hidden_.data(), shared_.data(),
                                    shared_gate_.data(), t, h, stream_));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> CudaTransformer::End() {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size;
  std::vector<int32_t> rows;
  for (const BatchSegment& s : segments_) {
    if (s.want_logits) rows.push_back(static_cast<int32_t>(s.first_row + s.tokens - 1));
  }
  const int64_t wanted = static_cast<int64_t>(rows.size());
  std::vector<float> logits(wanted * c.vocab_size);
  if (wanted == 0) {
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return logits;
  }
  RETURN_IF_ERROR(RmsNorm(hidden_.data(), total_, h, h, final_norm_.data(),
                          c.rms_norm_eps, normed_.data(), stream_));
  RETURN_IF_ERROR(routing_meta_.Reserve(wanted));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(routing_meta_.data(), rows.data(),
                                           wanted * sizeof(int32_t),
                                           cudaMemcpyHostToDevice, stream_));
  RETURN_IF_ERROR(GatherRowsToBf16(normed_.data(), routing_meta_.data(),
                                   wanted, h, x_bf16_.data(), stream_));
  RETURN_IF_ERROR(logits_.Reserve(wanted * c.vocab_size));
  RETURN_IF_ERROR(gemm_->Bf16ToF32(x_bf16_.data(), wanted, h, lm_head_.data(),
                                   c.vocab_size, logits_.data(),
                                   c.vocab_size));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      logits.data(), logits_.data(), logits.size() * sizeof(float),
      cudaMemcpyDeviceToHost, stream_));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return logits;
}

void CudaTransformer::Abandon() {
  if (pending_ == PendingMoe::kHost) {
    moe_->WaitMoe(moe_handle_, nullptr).IgnoreError();
  }
  pending_ = PendingMoe::kNone;
  if (stream_ != nullptr) {
    cudaSetDevice(ordinal_);
    cudaStreamSynchronize(stream_);
  }
}

}  // namespace moe::cuda
