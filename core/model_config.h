// Model hyper-parameters parsed from a Hugging Face `config.json`.
//
// Families are recognised by `architectures` (or `model_type` when
// `architectures` is absent). Field names and defaults follow the Hugging Face
// `transformers` configuration classes; structural sizes have no default and
// a missing one is an error that names the field.
#ifndef MOE_CORE_MODEL_CONFIG_H_
#define MOE_CORE_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

enum class ModelFamily {
  kMixtral,
  kQwen2Moe,
  kQwen3Moe,
  kOlmoe,
  kDeepseekV2,  // Multi-head Latent Attention, DeepSeekMoE
  kDeepseekV3,  // as V2, plus sigmoid scores with a correction bias
};

// How the router turns gate logits into expert scores.
enum class ScoringFunc { kSoftmax, kSigmoid };

// How the top-k experts are chosen from the scores (DeepSeek's topk_method;
// every other family is kGreedy).
enum class TopkMethod {
  kGreedy,              // top-k over all experts
  kGroupLimitedGreedy,  // top-k within the topk_group groups of best max
  kNoauxTc,             // scores + correction bias; groups by top-2 sum
};

// Multi-head Latent Attention sizes (DeepSeek-V2/V3). All zero for the
// other families.
struct MlaConfig {
  int q_lora_rank = 0;  // 0: a plain q_proj
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;

  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Floats cached per token and layer: the normalised latent and the
  // rotated key part shared by every head.
  int latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }
};

// YaRN rope scaling (`rope_scaling` with type "yarn"). factor <= 0: none.
struct YarnScaling {
  double factor = 0;
  int original_max_position_embeddings = 4096;
  double beta_fast = 32;
  double beta_slow = 1;
  double mscale = 1;
  double mscale_all_dim = 0;

  bool enabled() const { return factor > 0; }
};

// Where q/k RMSNorm is applied, if at all.
enum class QkNorm {
  kNone,
  kPerHead,          // Qwen3-MoE: weight [head_dim], per head, before RoPE
  kWholeProjection,  // OLMoE: weight [heads*head_dim], over the projection
};

absl::string_view FamilyName(ModelFamily family);            // "mixtral", ...
absl::string_view ArchitectureName(ModelFamily family);      // "MixtralForCausalLM"
absl::StatusOr<ModelFamily> ParseFamily(absl::string_view);  // either spelling

struct ModelConfig {
  ModelFamily family = ModelFamily::kMixtral;

  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  float rms_norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  int max_position_embeddings = 0;
  bool tie_word_embeddings = false;

  // Attention details.
  bool qkv_bias = false;  // q/k/v projections have biases (Qwen2-MoE)
  bool o_bias = false;    // o projection has a bias (attention_bias families)
  QkNorm qk_norm = QkNorm::kNone;
  float clip_qkv = 0.0f;   // > 0: clamp q, k, v to [-clip, clip] (OLMoE)
  int sliding_window = 0;  // > 0: attend only to the last `sliding_window`

  // Mixture of experts.
  int num_experts = 0;
  int num_experts_per_tok = 0;
  int expert_intermediate_size = 0;
  bool norm_topk_prob = false;  // renormalise the top-k weights to sum to 1
  int decoder_sparse_step = 1;
  std::vector<int> mlp_only_layers;
  int dense_intermediate_size = 0;  // FFN size of dense (non-MoE) layers
  int shared_expert_intermediate_size = 0;  // 0: no shared expert
  // Qwen2-MoE scales the shared expert by sigmoid(shared_expert_gate · x);
  // DeepSeek adds it unscaled.
  bool shared_expert_gated = false;

  // DeepSeek routing and layer layout (defaults: every other family).
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  TopkMethod topk_method = TopkMethod::kGreedy;
  int n_group = 1;
  int topk_group = 1;
  double routed_scaling_factor = 1.0;
  int first_k_dense_replace = 0;  // layers [0, this) are dense
  int moe_layer_freq = 1;         // MoE on layers with l % freq == 0

  // DeepSeek attention.
  MlaConfig mla;
  YarnScaling yarn;

  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  std::string torch_dtype;  // informational

  bool is_deepseek() const {
    return family == ModelFamily::kDeepseekV2 ||
           family == ModelFamily::kDeepseekV3;
  }
  // Multi-head Latent Attention: a latent KV cache (DeepSeek).
  bool uses_mla() const { return is_deepseek(); }
  // The gate has an e_score_correction_bias (noaux_tc).
  bool has_correction_bias() const {
    return topk_method == TopkMethod::kNoauxTc;
  }
  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  bool has_shared_expert() const { return shared_expert_intermediate_size > 0; }
  // True when layer `layer` routes through experts (else a dense MLP).
  bool IsMoeLayer(int layer) const;
  int NumMoeLayers() const;
};

// Parses config.json text. Errors are INVALID_ARGUMENT and name the field.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text);

// Reads and parses `dir/config.json`.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// Serialises in the Hugging Face layout of the config's family, such that
// ParseModelConfig(ModelConfigToJson(c)) reproduces `c`.
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace moe

#endif  // MOE_CORE_MODEL_CONFIG_H_
