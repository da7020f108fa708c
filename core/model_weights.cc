#include "core/model_weights.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/weight_names.h"

namespace moe {
namespace {

using Shape = std::vector<int64_t>;

absl::StatusOr<FfnWeights> LoadFfn(Checkpoint& ckpt, int64_t hidden,
                                   int64_t inter, const std::string& gate,
                                   const std::string& up,
                                   const std::string& down) {
  FfnWeights w;
  ASSIGN_OR_RETURN(w.gate, ckpt.Get(gate, Shape{inter, hidden}));
  ASSIGN_OR_RETURN(w.up, ckpt.Get(up, Shape{inter, hidden}));
  ASSIGN_OR_RETURN(w.down, ckpt.Get(down, Shape{hidden, inter}));
  return w;
}

absl::Status LoadMlaAttention(Checkpoint& ckpt, const ModelConfig& c, int l,
                              AttentionWeights& a) {
  const MlaConfig& m = c.mla;
  const int64_t h = c.hidden_size, heads = c.num_heads;
  auto get = [&](const char* proj, const char* kind, Shape shape) {
    return ckpt.Get(AttentionTensorName(l, proj, kind), shape);
  };
  if (m.q_lora_rank == 0) {
    ASSIGN_OR_RETURN(a.q, get("q_proj", "weight", {c.q_dim(), h}));
  } else {
    ASSIGN_OR_RETURN(a.q_a, get("q_a_proj", "weight", {m.q_lora_rank, h}));
    ASSIGN_OR_RETURN(a.q_a_norm, get("q_a_layernorm", "weight", {m.q_lora_rank}));
    ASSIGN_OR_RETURN(a.q_b, get("q_b_proj", "weight", {c.q_dim(), m.q_lora_rank}));
  }
  ASSIGN_OR_RETURN(a.kv_a,
                   get("kv_a_proj_with_mqa", "weight", {m.latent_dim(), h}));
  ASSIGN_OR_RETURN(a.kv_a_norm, get("kv_a_layernorm", "weight", {m.kv_lora_rank}));
  ASSIGN_OR_RETURN(a.kv_b, get("kv_b_proj", "weight",
                               {heads * (m.qk_nope_head_dim + m.v_head_dim),
                                m.kv_lora_rank}));
  ASSIGN_OR_RETURN(a.o, get("o_proj", "weight", {h, heads * m.v_head_dim}));
  return absl::OkStatus();
}

absl::Status LoadAttention(Checkpoint& ckpt, const ModelConfig& c, int l,
                           AttentionWeights& a) {
  if (c.uses_mla()) return LoadMlaAttention(ckpt, c, l, a);
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  ASSIGN_OR_RETURN(a.q, ckpt.Get(AttentionTensorName(l, "q_proj", "weight"), Shape{qd, h}));
  ASSIGN_OR_RETURN(a.k, ckpt.Get(AttentionTensorName(l, "k_proj", "weight"), Shape{kvd, h}));
  ASSIGN_OR_RETURN(a.v, ckpt.Get(AttentionTensorName(l, "v_proj", "weight"), Shape{kvd, h}));
  ASSIGN_OR_RETURN(a.o, ckpt.Get(AttentionTensorName(l, "o_proj", "weight"), Shape{h, qd}));
  if (c.qkv_bias) {
    ASSIGN_OR_RETURN(a.q_bias, ckpt.Get(AttentionTensorName(l, "q_proj", "bias"), Shape{qd}));
    ASSIGN_OR_RETURN(a.k_bias, ckpt.Get(AttentionTensorName(l, "k_proj", "bias"), Shape{kvd}));
    ASSIGN_OR_RETURN(a.v_bias, ckpt.Get(AttentionTensorName(l, "v_proj", "bias"), Shape{kvd}));
  }
  if (c.o_bias) {
    ASSIGN_OR_RETURN(a.o_bias, ckpt.Get(AttentionTensorName(l, "o_proj", "bias"), Shape{h}));
  }
  if (c.qk_norm == QkNorm::kPerHead) {
    ASSIGN_OR_RETURN(a.q_norm, ckpt.Get(AttentionTensorName(l, "q_norm", "weight"), Shape{c.head_dim}));
    ASSIGN_OR_RETURN(a.k_norm, ckpt.Get(AttentionTensorName(l, "k_norm", "weight"), Shape{c.head_dim}));
  } else if (c.qk_norm == QkNorm::kWholeProjection) {
    ASSIGN_OR_RETURN(a.q_norm, ckpt.Get(AttentionTensorName(l, "q_norm", "weight"), Shape{qd}));
    ASSIGN_OR_RETURN(a.k_norm, ckpt.Get(AttentionTensorName(l, "k_norm", "weight"), Shape{kvd}));
  }
  return absl::OkStatus();
}

absl::Status LoadNonExpert(Checkpoint& ckpt, const ModelConfig& c, int l,
                           LayerWeights& lw) {
  const int64_t h = c.hidden_size;
  ASSIGN_OR_RETURN(lw.input_norm, ckpt.Get(LayerTensorName(l, "input_layernorm.weight"), Shape{h}));
  ASSIGN_OR_RETURN(lw.post_attention_norm,
                   ckpt.Get(LayerTensorName(l, "post_attention_layernorm.weight"), Shape{h}));
  RETURN_IF_ERROR(LoadAttention(ckpt, c, l, lw.attention));
  if (!c.IsMoeLayer(l)) {
    ASSIGN_OR_RETURN(lw.dense_mlp,
                     LoadFfn(ckpt, h, c.dense_intermediate_size,
                             DenseMlpTensorName(l, FfnProj::kGate),
                             DenseMlpTensorName(l, FfnProj::kUp),
                             DenseMlpTensorName(l, FfnProj::kDown)));
  } else if (c.has_shared_expert()) {
    ASSIGN_OR_RETURN(lw.shared_expert,
                     LoadFfn(ckpt, h, c.shared_expert_intermediate_size,
                             SharedExpertTensorName(c, l, FfnProj::kGate),
                             SharedExpertTensorName(c, l, FfnProj::kUp),
                             SharedExpertTensorName(c, l, FfnProj::kDown)));
    if (c.shared_expert_gated) {
      ASSIGN_OR_RETURN(lw.shared_expert_gate,
                       ckpt.Get(SharedExpertGateName(l), Shape{1, h}));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<FfnWeights> LoadExpert(Checkpoint& ckpt, const ModelConfig& c,
                                      int l, int e) {
  return LoadFfn(ckpt, c.hidden_size, c.expert_intermediate_size,
                 ExpertTensorName(c, l, e, FfnProj::kGate),
                 ExpertTensorName(c, l, e, FfnProj::kUp),
                 ExpertTensorName(c, l, e, FfnProj::kDown));
}

}  // namespace

absl::StatusOr<ModelWeights> LoadModelWeights(
    std::shared_ptr<Checkpoint> checkpoint, const WeightSelection& selection) {
  ModelWeights w;
  w.checkpoint = checkpoint;
  w.config = checkpoint->config();
  const ModelConfig& c = w.config;
  Checkpoint& ckpt = *checkpoint;
  const int64_t h = c.hidden_size, v = c.vocab_size;

  for (const auto& [layer, expert] : selection.experts) {
    if (layer < 0 || layer >= c.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert placement names layer ", layer, " but the model has ",
          c.num_layers, " layers"));
    }
    if (!c.IsMoeLayer(layer)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert placement names layer ", layer, ", which is a dense layer"));
    }
    if (expert < 0 || expert >= c.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert placement names expert ", expert, " of layer ", layer,
          " but the model has ", c.num_experts, " experts"));
    }
  }

  if (selection.non_expert) {
    ASSIGN_OR_RETURN(w.embed_tokens, ckpt.Get(EmbedTokensName(), Shape{v, h}));
    ASSIGN_OR_RETURN(w.final_norm, ckpt.Get(FinalNormName(), Shape{h}));
    if (c.tie_word_embeddings) {
      w.lm_head = w.embed_tokens;
    } else {
      ASSIGN_OR_RETURN(w.lm_head, ckpt.Get(LmHeadName(), Shape{v, h}));
    }
  }
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    if (selection.non_expert) RETURN_IF_ERROR(LoadNonExpert(ckpt, c, l, lw));
    if (!c.IsMoeLayer(l)) continue;
    if (selection.gates) {
      ASSIGN_OR_RETURN(lw.router_gate, ckpt.Get(RouterGateName(c, l),
                                                Shape{c.num_experts, h}));
      if (c.has_correction_bias()) {
        TensorView bias;
        ASSIGN_OR_RETURN(bias, ckpt.Get(RouterCorrectionBiasName(l),
                                        Shape{c.num_experts}));
        lw.router_correction_bias.resize(c.num_experts);
        for (int e = 0; e < c.num_experts; ++e) {
          lw.router_correction_bias[e] = bias.At(e);
          if (!std::isfinite(lw.router_correction_bias[e])) {
            return absl::InvalidArgumentError(absl::StrCat(
                RouterCorrectionBiasName(l), ": element ", e,
                " is not finite"));
          }
        }
      }
    }
    if (selection.all_experts) {
      for (int e = 0; e < c.num_experts; ++e) {
        ASSIGN_OR_RETURN(lw.experts[e], LoadExpert(ckpt, c, l, e));
      }
    }
  }
  if (!selection.all_experts) {
    for (const auto& [layer, expert] : selection.experts) {
      ASSIGN_OR_RETURN(w.layers[layer].experts[expert],
                       LoadExpert(ckpt, c, layer, expert));
    }
  }
  return w;
}

int64_t ActiveWeightBytesPerToken(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  auto bytes = [](const TensorView& t) -> int64_t {
    return t.empty() ? 0 : static_cast<int64_t>(t.NumBytes());
  };
  auto ffn_bytes = [&](const FfnWeights& f) {
    return bytes(f.gate) + bytes(f.up) + bytes(f.down);
  };
  int64_t total = bytes(w.final_norm) + bytes(w.lm_head);
  if (!w.embed_tokens.empty()) {
    total += w.embed_tokens.cols() * DTypeSize(w.embed_tokens.dtype);
  }
  for (const LayerWeights& lw : w.layers) {
    const AttentionWeights& a = lw.attention;
    total += bytes(lw.input_norm) + bytes(lw.post_attention_norm);
    for (const TensorView* t :
         {&a.q, &a.k, &a.v, &a.o, &a.q_bias, &a.k_bias, &a.v_bias, &a.o_bias,
          &a.q_norm, &a.k_norm, &a.q_a, &a.q_a_norm, &a.q_b, &a.kv_a,
          &a.kv_a_norm, &a.kv_b}) {
      total += bytes(*t);
    }
    total += bytes(lw.router_gate) + bytes(lw.shared_expert_gate);
    if (lw.dense_mlp) total += ffn_bytes(*lw.dense_mlp);
    if (lw.shared_expert) total += ffn_bytes(*lw.shared_expert);
    if (!lw.experts.empty()) {
      total += c.num_experts_per_tok * ffn_bytes(lw.experts.begin()->second);
    }
  }
  return total;
}

absl::StatusOr<ModelWeights> LoadModelWeightsFromDir(
    const std::string& model_dir, const WeightSelection& selection,
    bool populate) {
  CheckpointOptions options;
  options.populate = populate;
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
      Checkpoint::Open(model_dir, options);
  if (!checkpoint.ok()) return checkpoint.status();
  return LoadModelWeights(std::shared_ptr<Checkpoint>(*std::move(checkpoint)),
                          selection);
}

}  // namespace moe
