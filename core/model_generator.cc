#include "core/model_generator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "core/safetensors_writer.h"
#include "core/status_macros.h"
#include "core/weight_names.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

// ---------------------------------------------------------------------------
// Deterministic values.
//
// Every tensor has its own key, a hash of (seed, name); element pair p of the
// tensor takes the two 32-bit halves of SplitMix64(key + (p + 1) * gamma).
// Values are therefore independent of the order tensors are written in, of
// the sharding and of the number of threads filling a tensor.

constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ull;

// SplitMix64's output function (a bijective 64-bit mixer).
inline uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// 64-bit FNV-1a: a hash that, unlike std::hash, is the same everywhere.
uint64_t Fnv1a64(absl::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t TensorKey(uint64_t seed, absl::string_view name) {
  return Mix64(Fnv1a64(name) ^ Mix64(seed + kGamma));
}

// Maps 32 random bits to center + scale * [-1, 1).
inline float Uniform(uint32_t bits, float center, float scale) {
  const float unit = static_cast<float>(bits >> 8) * (1.0f / 8388608.0f) - 1.0f;
  return center + scale * unit;
}

struct Bf16Store {
  static void Store(char* dst, int64_t i, float v) {
    const uint16_t h = FloatToBF16(v);
    std::memcpy(dst + 2 * i, &h, 2);
  }
};
struct F16Store {
  static void Store(char* dst, int64_t i, float v) {
    const uint16_t h = FloatToF16(v);
    std::memcpy(dst + 2 * i, &h, 2);
  }
};
struct F32Store {
  static void Store(char* dst, int64_t i, float v) {
    std::memcpy(dst + 4 * i, &v, 4);
  }
};

// Fills elements [begin, end) of a tensor; `begin` must be even.
template <typename S>
void FillRange(char* dst, int64_t begin, int64_t end, uint64_t key,
               float center, float scale) {
  int64_t i = begin;
  for (; i + 1 < end; i += 2) {
    const uint64_t r = Mix64(key + static_cast<uint64_t>(i / 2 + 1) * kGamma);
    S::Store(dst, i, Uniform(static_cast<uint32_t>(r), center, scale));
    S::Store(dst, i + 1,
             Uniform(static_cast<uint32_t>(r >> 32), center, scale));
  }
  if (i < end) {
    const uint64_t r = Mix64(key + static_cast<uint64_t>(i / 2 + 1) * kGamma);
    S::Store(dst, i, Uniform(static_cast<uint32_t>(r), center, scale));
  }
}

// Tensors below this many elements are filled by the calling thread alone.
constexpr int64_t kParallelFillElements = int64_t{1} << 18;

template <typename S>
void FillParallel(char* dst, int64_t n, uint64_t key, float center,
                  float scale) {
  const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  const int64_t threads = std::clamp<int64_t>(n / kParallelFillElements, 1, hw);
  if (threads == 1) {
    FillRange<S>(dst, 0, n, key, center, scale);
    return;
  }
  // Even chunk boundaries keep each random pair inside one chunk.
  const int64_t chunk = ((n + threads - 1) / threads + 1) & ~int64_t{1};
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t begin = std::min(n, t * chunk);
    const int64_t end = std::min(n, begin + chunk);
    workers.emplace_back(
        [=] { FillRange<S>(dst, begin, end, key, center, scale); });
  }
  FillRange<S>(dst, 0, std::min(n, chunk), key, center, scale);
  for (std::thread& w : workers) w.join();
}

void FillUniform(char* dst, DType dtype, int64_t n, uint64_t key, float center,
                 float scale) {
  switch (dtype) {
    case DType::kBF16:
      return FillParallel<Bf16Store>(dst, n, key, center, scale);
    case DType::kF16:
      return FillParallel<F16Store>(dst, n, key, center, scale);
    case DType::kF32:
      return FillParallel<F32Store>(dst, n, key, center, scale);
  }
}

// Fills `row_centers.size()` equal rows of `n` elements in all: row r is
// uniform noise of ± `scale` with its mean removed (so that it has no
// component along the all-ones direction), plus row_centers[r]. Each row
// draws from its own stream of `key`.
void FillMeanFreeRows(char* dst, DType dtype, int64_t n, uint64_t key,
                      float scale, const std::vector<float>& row_centers) {
  const int64_t rows = static_cast<int64_t>(row_centers.size());
  const int64_t per_row = n / rows;
  std::vector<float> row(per_row);
  for (int64_t r = 0; r < rows; ++r) {
    FillRange<F32Store>(reinterpret_cast<char*>(row.data()), 0, per_row,
                        key ^ (0x9e3779b97f4a7c15ULL * (r + 1)), 0.0f, scale);
    double sum = 0;
    for (float v : row) sum += v;
    const float shift = row_centers[r] - static_cast<float>(sum / per_row);
    for (int64_t i = 0; i < per_row; ++i) {
      const float v = row[i] + shift;
      const int64_t at = r * per_row + i;
      switch (dtype) {
        case DType::kBF16:
          Bf16Store::Store(dst, at, v);
          break;
        case DType::kF16:
          F16Store::Store(dst, at, v);
          break;
        case DType::kF32:
          F32Store::Store(dst, at, v);
          break;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The tensors of a model.

// A tensor and its value distribution: uniform in center ± scale.
struct PlannedTensor {
  std::string name;
  std::vector<int64_t> shape;
  float center = 0.0f;
  float scale = 0.0f;
  bool float32 = false;  // stored as F32 whatever the model's dtype
  // Non-empty: the tensor's rows (first dimension) are mean-free noise of
  // ± `scale` plus these centers, one per row (FillMeanFreeRows); `center`
  // is unused.
  std::vector<float> row_centers = {};
};

class Planner {
 public:
  // `gate_row_centers`: see PlannedTensor::row_centers, for every MoE
  // layer's router gate (empty: plain rows); `embedding_center`: the
  // center of every embedding element.
  Planner(const ModelConfig& c, std::vector<float> gate_row_centers,
          float embedding_center)
      : c_(c),
        gate_row_centers_(std::move(gate_row_centers)),
        embedding_center_(embedding_center) {}

  std::vector<PlannedTensor> Plan() && {
    const int64_t h = c_.hidden_size;
    Add(EmbedTokensName(), {c_.vocab_size, h}, embedding_center_, 1.0f);
    for (int l = 0; l < c_.num_layers; ++l) AddLayer(l);
    Norm(FinalNormName(), h);
    if (!c_.tie_word_embeddings) Linear(LmHeadName(), c_.vocab_size, h);
    return std::move(tensors_);
  }

 private:
  void Add(std::string name, std::vector<int64_t> shape, float center,
           float scale) {
    tensors_.push_back({std::move(name), std::move(shape), center, scale});
  }
  // A [out, in] projection: variance 1/in.
  void Linear(std::string name, int64_t out, int64_t in) {
    Add(std::move(name), {out, in}, 0.0f,
        std::sqrt(3.0f / static_cast<float>(in)));
  }
  void Norm(std::string name, int64_t size) {
    Add(std::move(name), {size}, 1.0f, 0.1f);
  }
  void Bias(std::string name, int64_t size) {
    Add(std::move(name), {size}, 0.0f, 0.1f);
  }
  void Ffn(int64_t intermediate, const std::string& gate, const std::string& up,
           const std::string& down) {
    Linear(gate, intermediate, c_.hidden_size);
    Linear(up, intermediate, c_.hidden_size);
    Linear(down, c_.hidden_size, intermediate);
  }

  // DeepSeek's Multi-head Latent Attention projections.
  void AddMlaAttention(int l) {
    const MlaConfig& m = c_.mla;
    const int64_t h = c_.hidden_size, heads = c_.num_heads;
    if (m.q_lora_rank == 0) {
      Linear(AttentionTensorName(l, "q_proj", "weight"), c_.q_dim(), h);
    } else {
      Linear(AttentionTensorName(l, "q_a_proj", "weight"), m.q_lora_rank, h);
      Norm(AttentionTensorName(l, "q_a_layernorm", "weight"), m.q_lora_rank);
      Linear(AttentionTensorName(l, "q_b_proj", "weight"), c_.q_dim(),
             m.q_lora_rank);
    }
    Linear(AttentionTensorName(l, "kv_a_proj_with_mqa", "weight"),
           m.latent_dim(), h);
    Norm(AttentionTensorName(l, "kv_a_layernorm", "weight"), m.kv_lora_rank);
    Linear(AttentionTensorName(l, "kv_b_proj", "weight"),
           heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank);
    Linear(AttentionTensorName(l, "o_proj", "weight"), h,
           heads * m.v_head_dim);
  }

  void AddLayer(int l) {
    const int64_t h = c_.hidden_size;
    Norm(LayerTensorName(l, "input_layernorm.weight"), h);
    if (c_.uses_mla()) {
      AddMlaAttention(l);
    } else {
      AddAttention(l);
    }
    Norm(LayerTensorName(l, "post_attention_layernorm.weight"), h);
    AddFfn(l);
  }

  void AddAttention(int l) {
    const int64_t h = c_.hidden_size;
    const struct {
      const char* proj;
      int64_t out;
    } qkv[] = {{"q_proj", c_.q_dim()},
               {"k_proj", c_.kv_dim()},
               {"v_proj", c_.kv_dim()}};
    for (const auto& p : qkv) {
      Linear(AttentionTensorName(l, p.proj, "weight"), p.out, h);
      if (c_.qkv_bias) Bias(AttentionTensorName(l, p.proj, "bias"), p.out);
    }
    Linear(AttentionTensorName(l, "o_proj", "weight"), h, c_.q_dim());
    if (c_.o_bias) Bias(AttentionTensorName(l, "o_proj", "bias"), h);
    if (c_.qk_norm == QkNorm::kPerHead) {
      Norm(AttentionTensorName(l, "q_norm", "weight"), c_.head_dim);
      Norm(AttentionTensorName(l, "k_norm", "weight"), c_.head_dim);
    } else if (c_.qk_norm == QkNorm::kWholeProjection) {
      Norm(AttentionTensorName(l, "q_norm", "weight"), c_.q_dim());
      Norm(AttentionTensorName(l, "k_norm", "weight"), c_.kv_dim());
    }
  }

  void AddFfn(int l) {
    const int64_t h = c_.hidden_size;
    if (!c_.IsMoeLayer(l)) {
      Ffn(c_.dense_intermediate_size, DenseMlpTensorName(l, FfnProj::kGate),
          DenseMlpTensorName(l, FfnProj::kUp),
          DenseMlpTensorName(l, FfnProj::kDown));
      return;
    }
    // Router logits three times the usual scale make routing decisive, so
    // that tiny numeric differences rarely flip an expert choice.
    Add(RouterGateName(c_, l), {c_.num_experts, h}, 0.0f,
        3.0f * std::sqrt(3.0f / static_cast<float>(h)));
    tensors_.back().row_centers = gate_row_centers_;
    if (c_.has_correction_bias()) {
      // float32, as DeepSeek-V3 stores it; large enough against sigmoid
      // scores in (0, 1) to change some choices.
      tensors_.push_back(
          {RouterCorrectionBiasName(l), {c_.num_experts}, 0.0f, 0.3f, true});
    }
    for (int e = 0; e < c_.num_experts; ++e) {
      Ffn(c_.expert_intermediate_size,
          ExpertTensorName(c_, l, e, FfnProj::kGate),
          ExpertTensorName(c_, l, e, FfnProj::kUp),
          ExpertTensorName(c_, l, e, FfnProj::kDown));
    }
    if (c_.has_shared_expert()) {
      Ffn(c_.shared_expert_intermediate_size,
          SharedExpertTensorName(c_, l, FfnProj::kGate),
          SharedExpertTensorName(c_, l, FfnProj::kUp),
          SharedExpertTensorName(c_, l, FfnProj::kDown));
      if (c_.shared_expert_gated) Linear(SharedExpertGateName(l), 1, h);
    }
  }

  const ModelConfig& c_;
  std::vector<PlannedTensor> tensors_;
  const std::vector<float> gate_row_centers_;
  const float embedding_center_;
};

// ---------------------------------------------------------------------------
// Validation.

absl::Status SpecError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("GeneratorSpec: ", field, " ", problem));
}

absl::Status RequirePositive(absl::string_view field, int64_t value) {
  if (value > 0) return absl::OkStatus();
  return SpecError(field, absl::StrCat("must be positive, got ", value));
}

// DeepSeek's structural rules; the rest (group sizes, routing names) is
// checked by reading the written config.json back.
absl::Status ValidateDeepseek(const ModelConfig& c) {
  const MlaConfig& m = c.mla;
  if (m.q_lora_rank < 0) {
    return SpecError("config.mla.q_lora_rank", "must be >= 0 (0: no q LoRA)");
  }
  RETURN_IF_ERROR(RequirePositive("config.mla.kv_lora_rank", m.kv_lora_rank));
  RETURN_IF_ERROR(
      RequirePositive("config.mla.qk_nope_head_dim", m.qk_nope_head_dim));
  RETURN_IF_ERROR(
      RequirePositive("config.mla.qk_rope_head_dim", m.qk_rope_head_dim));
  RETURN_IF_ERROR(RequirePositive("config.mla.v_head_dim", m.v_head_dim));
  if (c.head_dim != m.qk_head_dim() || c.num_kv_heads != c.num_heads) {
    return SpecError("config.head_dim",
                     "must be qk_nope + qk_rope and num_kv_heads must equal "
                     "num_heads for MLA");
  }
  if (c.qkv_bias || c.o_bias || c.qk_norm != QkNorm::kNone ||
      c.clip_qkv != 0 || c.sliding_window != 0) {
    return SpecError("config.qkv_bias",
                     "(and o_bias, qk_norm, clip_qkv, sliding_window) must be "
                     "off for DeepSeek");
  }
  if (c.shared_expert_intermediate_size % c.expert_intermediate_size != 0) {
    return SpecError("config.shared_expert_intermediate_size",
                     "must be n_shared_experts * expert_intermediate_size");
  }
  return absl::OkStatus();
}

// Checks that config.json can express `c` and that its tensors are
// well-formed; the family-specific rules mirror ParseModelConfig.
absl::Status ValidateConfig(const ModelConfig& c) {
  RETURN_IF_ERROR(RequirePositive("config.hidden_size", c.hidden_size));
  RETURN_IF_ERROR(RequirePositive("config.num_layers", c.num_layers));
  RETURN_IF_ERROR(RequirePositive("config.num_heads", c.num_heads));
  RETURN_IF_ERROR(RequirePositive("config.num_kv_heads", c.num_kv_heads));
  RETURN_IF_ERROR(RequirePositive("config.head_dim", c.head_dim));
  RETURN_IF_ERROR(RequirePositive("config.vocab_size", c.vocab_size));
  RETURN_IF_ERROR(RequirePositive("config.num_experts", c.num_experts));
  RETURN_IF_ERROR(
      RequirePositive("config.num_experts_per_tok", c.num_experts_per_tok));
  RETURN_IF_ERROR(RequirePositive("config.expert_intermediate_size",
                                  c.expert_intermediate_size));
  RETURN_IF_ERROR(RequirePositive("config.max_position_embeddings",
                                  c.max_position_embeddings));
  if (c.num_heads % c.num_kv_heads != 0) {
    return SpecError(
        "config.num_kv_heads",
        absl::StrCat("(", c.num_kv_heads, ") must divide num_heads (",
                     c.num_heads, ")"));
  }
  if (c.head_dim % 2 != 0 && !c.is_deepseek()) {
    return SpecError("config.head_dim", "must be even (rotary pairs)");
  }
  if (c.num_experts_per_tok > c.num_experts) {
    return SpecError(
        "config.num_experts_per_tok",
        absl::StrCat("(", c.num_experts_per_tok, ") exceeds num_experts (",
                     c.num_experts, ")"));
  }
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) {
    return SpecError("config.rms_norm_eps", "must be positive and finite");
  }
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
    return SpecError("config.rope_theta", "must be positive and finite");
  }
  if (c.bos_token_id < -1 || c.bos_token_id >= c.vocab_size) {
    return SpecError("config.bos_token_id",
                     absl::StrCat("(", c.bos_token_id,
                                  ") must be -1 or inside the vocabulary"));
  }
  for (int id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return SpecError("config.eos_token_ids",
                       absl::StrCat("holds ", id, ", outside the vocabulary"));
    }
  }

  const ModelFamily f = c.family;
  const std::string family(FamilyName(f));
  const bool qwen = f == ModelFamily::kQwen2Moe || f == ModelFamily::kQwen3Moe;
  if (!qwen) {
    if (c.decoder_sparse_step != 1) {
      return SpecError("config.decoder_sparse_step",
                       absl::StrCat("must be 1 for ", family,
                                    " (every layer is a MoE layer)"));
    }
    if (!c.mlp_only_layers.empty()) {
      return SpecError("config.mlp_only_layers",
                       absl::StrCat("must be empty for ", family,
                                    " (every layer is a MoE layer)"));
    }
  }
  if (c.decoder_sparse_step < 1) {
    return SpecError("config.decoder_sparse_step", "must be at least 1");
  }
  for (int l : c.mlp_only_layers) {
    if (l < 0 || l >= c.num_layers) {
      return SpecError("config.mlp_only_layers",
                       absl::StrCat("holds ", l, ", not a layer index (",
                                    c.num_layers, " layers)"));
    }
  }
  const bool any_dense = c.NumMoeLayers() < c.num_layers;
  if (any_dense && c.dense_intermediate_size <= 0) {
    return SpecError("config.dense_intermediate_size",
                     "must be positive when some layers are dense");
  }
  if (!any_dense && c.dense_intermediate_size != 0) {
    return SpecError("config.dense_intermediate_size",
                     "must be 0 when no layer is dense");
  }
  if (f == ModelFamily::kQwen2Moe) {
    RETURN_IF_ERROR(RequirePositive("config.shared_expert_intermediate_size",
                                    c.shared_expert_intermediate_size));
  } else if (c.shared_expert_intermediate_size != 0 && !c.is_deepseek()) {
    return SpecError(
        "config.shared_expert_intermediate_size",
        absl::StrCat("must be 0 for ", family, " (no shared expert)"));
  }
  if (f == ModelFamily::kMixtral && !c.norm_topk_prob) {
    return SpecError("config.norm_topk_prob",
                     "must be true for mixtral (it always renormalises)");
  }
  if (c.shared_expert_gated != (f == ModelFamily::kQwen2Moe)) {
    return SpecError("config.shared_expert_gated",
                     "must be true for qwen2_moe and false otherwise");
  }
  if (!c.is_deepseek() && (c.mla.kv_lora_rank != 0 || c.yarn.enabled() ||
                           c.topk_method != TopkMethod::kGreedy ||
                           c.scoring_func != ScoringFunc::kSoftmax ||
                           c.first_k_dense_replace != 0)) {
    return SpecError("config.mla",
                     absl::StrCat("(and yarn, topk_method, scoring_func, "
                                  "first_k_dense_replace) are DeepSeek's; "
                                  "leave them at their defaults for ",
                                  family));
  }
  switch (f) {
    case ModelFamily::kDeepseekV2:
    case ModelFamily::kDeepseekV3:
      RETURN_IF_ERROR(ValidateDeepseek(c));
      break;
    case ModelFamily::kMixtral:
    case ModelFamily::kQwen2Moe:
      if (f == ModelFamily::kMixtral && c.qkv_bias) {
        return SpecError("config.qkv_bias", "must be false for mixtral");
      }
      if (c.o_bias) {
        return SpecError("config.o_bias",
                         absl::StrCat("must be false for ", family));
      }
      if (c.qk_norm != QkNorm::kNone) {
        return SpecError("config.qk_norm",
                         absl::StrCat("must be kNone for ", family));
      }
      break;
    case ModelFamily::kQwen3Moe:
    case ModelFamily::kOlmoe: {
      if (c.o_bias != c.qkv_bias) {
        return SpecError("config.o_bias",
                         absl::StrCat("must equal qkv_bias for ", family,
                                      " (one attention_bias flag)"));
      }
      const QkNorm want = f == ModelFamily::kQwen3Moe
                              ? QkNorm::kPerHead
                              : QkNorm::kWholeProjection;
      if (c.qk_norm != want) {
        return SpecError(
            "config.qk_norm",
            absl::StrCat(
                "must be ",
                want == QkNorm::kPerHead ? "kPerHead" : "kWholeProjection",
                " for ", family));
      }
      break;
    }
  }
  if (c.clip_qkv < 0 || (c.clip_qkv > 0 && f != ModelFamily::kOlmoe)) {
    return SpecError("config.clip_qkv", "must be 0, or positive for olmoe");
  }
  if (c.sliding_window < 0 ||
      (c.sliding_window > 0 && f != ModelFamily::kMixtral)) {
    return SpecError("config.sliding_window",
                     "must be 0, or positive for mixtral");
  }
  return absl::OkStatus();
}

// The first field in which `read` differs from `wrote`, or OK.
absl::Status CompareRoundTrip(const ModelConfig& wrote,
                              const ModelConfig& read) {
  auto field = [](absl::string_view name, const auto& a, const auto& b) {
    if (a == b) return absl::OkStatus();
    return SpecError(absl::StrCat("config.", name),
                     "cannot be expressed in config.json for this family "
                     "(reads back differently)");
  };
  RETURN_IF_ERROR(field("family", wrote.family, read.family));
  RETURN_IF_ERROR(field("hidden_size", wrote.hidden_size, read.hidden_size));
  RETURN_IF_ERROR(field("num_layers", wrote.num_layers, read.num_layers));
  RETURN_IF_ERROR(field("num_heads", wrote.num_heads, read.num_heads));
  RETURN_IF_ERROR(field("num_kv_heads", wrote.num_kv_heads, read.num_kv_heads));
  RETURN_IF_ERROR(field("head_dim", wrote.head_dim, read.head_dim));
  RETURN_IF_ERROR(field("vocab_size", wrote.vocab_size, read.vocab_size));
  RETURN_IF_ERROR(field("rms_norm_eps", wrote.rms_norm_eps, read.rms_norm_eps));
  RETURN_IF_ERROR(field("rope_theta", wrote.rope_theta, read.rope_theta));
  RETURN_IF_ERROR(field("max_position_embeddings",
                        wrote.max_position_embeddings,
                        read.max_position_embeddings));
  RETURN_IF_ERROR(field("tie_word_embeddings", wrote.tie_word_embeddings,
                        read.tie_word_embeddings));
  RETURN_IF_ERROR(field("qkv_bias", wrote.qkv_bias, read.qkv_bias));
  RETURN_IF_ERROR(field("o_bias", wrote.o_bias, read.o_bias));
  RETURN_IF_ERROR(field("qk_norm", wrote.qk_norm, read.qk_norm));
  RETURN_IF_ERROR(field("clip_qkv", wrote.clip_qkv, read.clip_qkv));
  RETURN_IF_ERROR(
      field("sliding_window", wrote.sliding_window, read.sliding_window));
  RETURN_IF_ERROR(field("num_experts", wrote.num_experts, read.num_experts));
  RETURN_IF_ERROR(field("num_experts_per_tok", wrote.num_experts_per_tok,
                        read.num_experts_per_tok));
  RETURN_IF_ERROR(field("expert_intermediate_size",
                        wrote.expert_intermediate_size,
                        read.expert_intermediate_size));
  RETURN_IF_ERROR(
      field("norm_topk_prob", wrote.norm_topk_prob, read.norm_topk_prob));
  RETURN_IF_ERROR(field("decoder_sparse_step", wrote.decoder_sparse_step,
                        read.decoder_sparse_step));
  RETURN_IF_ERROR(
      field("mlp_only_layers", wrote.mlp_only_layers, read.mlp_only_layers));
  RETURN_IF_ERROR(field("dense_intermediate_size",
                        wrote.dense_intermediate_size,
                        read.dense_intermediate_size));
  RETURN_IF_ERROR(field("shared_expert_intermediate_size",
                        wrote.shared_expert_intermediate_size,
                        read.shared_expert_intermediate_size));
  RETURN_IF_ERROR(field("shared_expert_gated", wrote.shared_expert_gated,
                        read.shared_expert_gated));
  RETURN_IF_ERROR(field("scoring_func", wrote.scoring_func, read.scoring_func));
  RETURN_IF_ERROR(field("topk_method", wrote.topk_method, read.topk_method));
  RETURN_IF_ERROR(field("n_group", wrote.n_group, read.n_group));
  RETURN_IF_ERROR(field("topk_group", wrote.topk_group, read.topk_group));
  RETURN_IF_ERROR(field("routed_scaling_factor", wrote.routed_scaling_factor,
                        read.routed_scaling_factor));
  RETURN_IF_ERROR(field("first_k_dense_replace", wrote.first_k_dense_replace,
                        read.first_k_dense_replace));
  RETURN_IF_ERROR(
      field("moe_layer_freq", wrote.moe_layer_freq, read.moe_layer_freq));
  const MlaConfig &wm = wrote.mla, &rm = read.mla;
  RETURN_IF_ERROR(field("mla.q_lora_rank", wm.q_lora_rank, rm.q_lora_rank));
  RETURN_IF_ERROR(field("mla.kv_lora_rank", wm.kv_lora_rank, rm.kv_lora_rank));
  RETURN_IF_ERROR(field("mla.qk_nope_head_dim", wm.qk_nope_head_dim,
                        rm.qk_nope_head_dim));
  RETURN_IF_ERROR(field("mla.qk_rope_head_dim", wm.qk_rope_head_dim,
                        rm.qk_rope_head_dim));
  RETURN_IF_ERROR(field("mla.v_head_dim", wm.v_head_dim, rm.v_head_dim));
  const YarnScaling &wy = wrote.yarn, &ry = read.yarn;
  RETURN_IF_ERROR(field("yarn.factor", wy.factor, ry.factor));
  RETURN_IF_ERROR(field("yarn.original_max_position_embeddings",
                        wy.original_max_position_embeddings,
                        ry.original_max_position_embeddings));
  RETURN_IF_ERROR(field("yarn.beta_fast", wy.beta_fast, ry.beta_fast));
  RETURN_IF_ERROR(field("yarn.beta_slow", wy.beta_slow, ry.beta_slow));
  RETURN_IF_ERROR(field("yarn.mscale", wy.mscale, ry.mscale));
  RETURN_IF_ERROR(
      field("yarn.mscale_all_dim", wy.mscale_all_dim, ry.mscale_all_dim));
  RETURN_IF_ERROR(field("bos_token_id", wrote.bos_token_id, read.bos_token_id));
  RETURN_IF_ERROR(
      field("eos_token_ids", wrote.eos_token_ids, read.eos_token_ids));
  return field("torch_dtype", wrote.torch_dtype, read.torch_dtype);
}

// The config as written: torch_dtype names the dtype the weights are stored
// in.
ModelConfig ConfigToWrite(const GeneratorSpec& spec) {
  ModelConfig c = spec.config;
  switch (spec.dtype) {
    case DType::kBF16:
      c.torch_dtype = "bfloat16";
      break;
    case DType::kF16:
      c.torch_dtype = "float16";
      break;
    case DType::kF32:
      c.torch_dtype = "float32";
      break;
  }
  return c;
}

// ---------------------------------------------------------------------------
// Output.

// Index of the first tensor of each shard: contiguous runs of tensors, each
// shard non-empty, boundaries as close as possible to equal byte counts.
std::vector<size_t> ShardStarts(const std::vector<int64_t>& bytes, int shards) {
  const size_t n = bytes.size();
  std::vector<int64_t> before(n + 1, 0);  // bytes of tensors [0, i)
  for (size_t i = 0; i < n; ++i) before[i + 1] = before[i] + bytes[i];
  const int64_t total = before[n];
  std::vector<size_t> starts = {0};
  for (int s = 1; s < shards; ++s) {
    const double target = static_cast<double>(total) * s / shards;
    const size_t lo = starts.back() + 1;
    const size_t hi = n - static_cast<size_t>(shards - s);
    size_t best = lo;
    for (size_t i = lo; i <= hi; ++i) {
      if (std::abs(before[i] - target) < std::abs(before[best] - target)) {
        best = i;
      }
      if (before[i] >= target) break;  // later boundaries only move away
    }
    starts.push_back(best);
  }
  return starts;
}

// Removes checkpoint files a previous run may have left in `dir`, so that a
// stale index or shard cannot shadow the new checkpoint, and a failed run
// leaves no config.json.
absl::Status RemoveOldCheckpointFiles(const std::string& dir) {
  static const std::regex kShard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  std::vector<std::filesystem::path> old;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name == "config.json" || name == "model.safetensors" ||
        name == "model.safetensors.index.json" ||
        std::regex_match(name, kShard)) {
      old.push_back(it->path());
    }
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot list ", dir, ": ", ec.message()));
  }
  for (const std::filesystem::path& path : old) {
    if (!std::filesystem::remove(path, ec) && ec) {
      return absl::InternalError(
          absl::StrCat("cannot remove old checkpoint file ", path.string(),
                       ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// SmallConfig's DeepSeek shapes. V2: like V2-Lite (no q LoRA, softmax,
// greedy, one dense layer, two shared experts). V3: q LoRA, sigmoid scores
// with a correction bias, noaux_tc over 4 groups, renormalised and scaled
// weights, YaRN rope whose ramp covers the rope dimensions.
void SetSmallDeepseek(ModelConfig& c) {
  c.num_layers = 3;
  c.num_kv_heads = c.num_heads;
  c.rms_norm_eps = 1e-6f;
  c.mla.kv_lora_rank = 32;
  c.mla.qk_nope_head_dim = 16;
  c.mla.qk_rope_head_dim = 8;
  c.mla.v_head_dim = 16;
  c.head_dim = c.mla.qk_head_dim();
  c.expert_intermediate_size = 48;
  c.shared_expert_intermediate_size = 2 * 48;
  c.first_k_dense_replace = 1;
  c.dense_intermediate_size = 128;
  if (c.family == ModelFamily::kDeepseekV2) return;
  c.mla.q_lora_rank = 48;
  c.scoring_func = ScoringFunc::kSigmoid;
  c.topk_method = TopkMethod::kNoauxTc;
  c.n_group = 4;
  c.topk_group = 2;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  c.yarn.factor = 4;
  c.yarn.original_max_position_embeddings = 256;
  c.yarn.mscale = 1;
  c.yarn.mscale_all_dim = 1;
  c.max_position_embeddings = 1024;
}

}  // namespace

ModelConfig SmallConfig(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.hidden_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 512;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 4096;
  c.num_experts = 8;
  c.num_experts_per_tok = 2;
  c.expert_intermediate_size = 96;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.torch_dtype = "bfloat16";
  switch (family) {
    case ModelFamily::kMixtral:  // as fixtures/tiny-mixtral
      c.norm_topk_prob = true;
      break;
    case ModelFamily::kQwen2Moe:  // as fixtures/tiny-qwen2-moe
      c.num_layers = 3;
      c.num_experts_per_tok = 3;
      c.expert_intermediate_size = 48;
      c.mlp_only_layers = {1};
      c.dense_intermediate_size = 96;
      c.shared_expert_intermediate_size = 96;
      c.qkv_bias = true;
      c.shared_expert_gated = true;
      break;
    case ModelFamily::kQwen3Moe:
      c.head_dim = 32;  // != hidden / heads, as in the real models
      c.rms_norm_eps = 1e-6f;
      c.rope_theta = 1000000.0;
      c.norm_topk_prob = true;
      c.qk_norm = QkNorm::kPerHead;
      break;
    case ModelFamily::kOlmoe:
      c.qk_norm = QkNorm::kWholeProjection;
      break;
    case ModelFamily::kDeepseekV2:  // shaped like DeepSeek-V2-Lite
    case ModelFamily::kDeepseekV3:
      SetSmallDeepseek(c);
      break;
  }
  return c;
}

namespace {

// With hot experts, every embedding row gets this shared component (all
// ones), so that every hidden state has a positive mean, which the hot
// experts' gate rows pick up.
constexpr float kHotEmbeddingCenter = 1.0f;

// The router gates' row centers of `spec` (empty without hot experts): 0
// for the others, hot_gate_bias / hidden_size for the hot experts, whose
// logits thereby gain hot_gate_bias times the mean of the normalised hidden
// state. INVALID_ARGUMENT naming the field for an expert outside the model,
// a repeated one, or a bias that is not positive and finite.
absl::StatusOr<std::vector<float>> GateRowCenters(const GeneratorSpec& spec) {
  if (spec.hot_experts.empty()) {
    if (spec.hot_gate_bias != 0) {
      return SpecError("hot_gate_bias", "needs hot_experts");
    }
    return std::vector<float>();
  }
  if (!(spec.hot_gate_bias > 0) || !std::isfinite(spec.hot_gate_bias)) {
    return SpecError("hot_gate_bias",
                     absl::StrCat("must be positive and finite, got ",
                                  spec.hot_gate_bias));
  }
  const int experts = spec.config.num_experts;
  std::vector<float> centers(experts, 0.0f);
  std::vector<bool> listed(experts, false);
  for (size_t i = 0; i < spec.hot_experts.size(); ++i) {
    const int e = spec.hot_experts[i];
    const std::string field = absl::StrCat("hot_experts[", i, "]");
    if (e < 0 || e >= experts) {
      return SpecError(field, absl::StrCat(e, " is outside the model's "
                                              "experts [0, ",
                                           experts, ")"));
    }
    if (listed[e]) {
      return SpecError(field, absl::StrCat("expert ", e, " is listed twice"));
    }
    listed[e] = true;
    centers[e] = spec.hot_gate_bias /
                 static_cast<float>(spec.config.hidden_size);
  }
  return centers;
}

}  // namespace

absl::Status GenerateModel(
    const std::string& dir, const GeneratorSpec& spec,
    const std::function<void(int64_t, int64_t)>& progress) {
  RETURN_IF_ERROR(ValidateConfig(spec.config));
  ASSIGN_OR_RETURN(std::vector<float> gate_row_centers, GateRowCenters(spec));
  const float embedding_center =
      gate_row_centers.empty() ? 0.0f : kHotEmbeddingCenter;
  std::vector<PlannedTensor> plan =
      Planner(spec.config, std::move(gate_row_centers), embedding_center)
          .Plan();
  if (spec.num_shards < 1 ||
      static_cast<size_t>(spec.num_shards) > plan.size()) {
    return SpecError("num_shards",
                     absl::StrCat("must be between 1 and the number of "
                                  "tensors (",
                                  plan.size(), "), got ", spec.num_shards));
  }
  const ModelConfig config = ConfigToWrite(spec);
  const std::string config_json = ModelConfigToJson(config);
  // Whatever is written must read back as the same config.
  absl::StatusOr<ModelConfig> reparsed = ParseModelConfig(config_json);
  if (!reparsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("GeneratorSpec: config cannot be written: ",
                     reparsed.status().message()));
  }
  RETURN_IF_ERROR(CompareRoundTrip(config, *reparsed));

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create directory ", dir, ": ", ec.message()));
  }
  RETURN_IF_ERROR(RemoveOldCheckpointFiles(dir));

  std::vector<int64_t> bytes;
  int64_t total = 0;
  for (const PlannedTensor& t : plan) {
    int64_t n = DTypeSize(t.float32 ? DType::kF32 : spec.dtype);
    for (int64_t d : t.shape) n *= d;
    bytes.push_back(n);
    total += n;
  }
  std::vector<size_t> starts = ShardStarts(bytes, spec.num_shards);
  starts.push_back(plan.size());

  nlohmann::json weight_map = nlohmann::json::object();
  int64_t done_before = 0;  // bytes of earlier shards
  for (int s = 0; s < spec.num_shards; ++s) {
    const std::string file =
        spec.num_shards == 1 ? std::string("model.safetensors")
                             : absl::StrFormat("model-%05d-of-%05d.safetensors",
                                               s + 1, spec.num_shards);
    std::vector<TensorToWrite> tensors;
    int64_t shard_bytes = 0;
    for (size_t i = starts[s]; i < starts[s + 1]; ++i) {
      const PlannedTensor& p = plan[i];
      TensorToWrite t;
      t.name = p.name;
      t.dtype = p.float32 ? DType::kF32 : spec.dtype;
      t.shape = p.shape;
      const int64_t n = t.NumElements();
      const uint64_t key = TensorKey(spec.seed, p.name);
      const DType dtype = t.dtype;
      const float center = p.center, scale = p.scale;
      if (p.row_centers.empty()) {
        t.fill = [=](char* dst) {
          FillUniform(dst, dtype, n, key, center, scale);
        };
      } else {
        const std::vector<float> rows = p.row_centers;
        t.fill = [=](char* dst) {
          FillMeanFreeRows(dst, dtype, n, key, scale, rows);
        };
      }
      tensors.push_back(std::move(t));
      weight_map[p.name] = file;
      shard_bytes += bytes[i];
    }
    std::function<void(int64_t, int64_t)> shard_progress;
    if (progress) {
      shard_progress = [&](int64_t done, int64_t) {
        progress(done_before + done, total);
      };
    }
    RETURN_IF_ERROR(WriteSafetensors(absl::StrCat(dir, "/", file), tensors,
                                     shard_progress));
    done_before += shard_bytes;
  }
  if (spec.num_shards > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}},
                            {"weight_map", weight_map}};
    RETURN_IF_ERROR(
        WriteTextFile(absl::StrCat(dir, "/model.safetensors.index.json"),
                      index.dump(2) + "\n"));
  }
  // config.json last: its presence marks a complete checkpoint.
  return WriteTextFile(absl::StrCat(dir, "/config.json"), config_json);
}

}  // namespace moe
