// Typed views of a model's weights, loaded in whole or in part.
//
// Every service loads only its share: the attention server the non-expert
// weights, the router the gates, an expert server the (layer, expert) pairs
// placed on it. Views point into the Checkpoint's mappings, which must outlive
// them (ModelWeights keeps the Checkpoint alive).
#ifndef MOE_CORE_MODEL_WEIGHTS_H_
#define MOE_CORE_MODEL_WEIGHTS_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint.h"
#include "core/model_config.h"
#include "core/tensor.h"

namespace moe {

// A SwiGLU FFN: down(silu(gate(x)) * up(x)).
struct FfnWeights {
  TensorView gate;  // [intermediate, hidden]
  TensorView up;    // [intermediate, hidden]
  TensorView down;  // [hidden, intermediate]
};

struct AttentionWeights {
  TensorView q, k, v, o;  // [q_dim, H], [kv_dim, H], [kv_dim, H], [H, q_dim]
  TensorView q_bias, k_bias, v_bias, o_bias;  // empty unless the family has
  TensorView q_norm, k_norm;                  // empty unless qk_norm != kNone

  // Multi-head Latent Attention (DeepSeek; k and v empty, o is
  // [H, heads * v_head_dim]). q is the plain q_proj when q_lora_rank is 0,
  // else q_a [q_lora, H], q_a_norm [q_lora], q_b [heads * qk_head_dim, q_lora].
  TensorView q_a, q_a_norm, q_b;
  TensorView kv_a;       // kv_a_proj_with_mqa [kv_lora + rope, H]
  TensorView kv_a_norm;  // [kv_lora]
  TensorView kv_b;       // [heads * (nope + v_head_dim), kv_lora]
};

struct LayerWeights {
  TensorView input_norm;           // [H]
  TensorView post_attention_norm;  // [H]
  AttentionWeights attention;
  TensorView router_gate;                  // [E, H]; MoE layers, if loaded
  // DeepSeek noaux_tc: e_score_correction_bias [E] in float32, loaded with
  // the gate; empty otherwise.
  std::vector<float> router_correction_bias;
  std::optional<FfnWeights> dense_mlp;     // dense layers
  std::optional<FfnWeights> shared_expert; // Qwen2-MoE, DeepSeek
  TensorView shared_expert_gate;           // [1, H]; when shared_expert_gated
  std::map<int, FfnWeights> experts;       // expert id -> weights, as loaded
};

struct ModelWeights {
  std::shared_ptr<Checkpoint> checkpoint;  // owns the mappings
  ModelConfig config;
  TensorView embed_tokens;  // [V, H]
  TensorView final_norm;    // [H]
  TensorView lm_head;       // [V, H]; the embedding when tied
  std::vector<LayerWeights> layers;
};

// Which parts of a model to load.
struct WeightSelection {
  // Embeddings, norms, attention, dense MLPs, shared experts, lm_head.
  bool non_expert = true;
  // The router gate of every MoE layer.
  bool gates = true;
  // Routed experts: all of them, or only those listed as (layer, expert).
  bool all_experts = true;
  std::set<std::pair<int, int>> experts;

  static WeightSelection Full() { return {}; }
  static WeightSelection NonExpertOnly() { return {true, false, false, {}}; }
  static WeightSelection GatesOnly() { return {false, true, false, {}}; }
  static WeightSelection Experts(std::set<std::pair<int, int>> experts) {
    return {false, false, false, std::move(experts)};
  }
};

// Loads and shape-checks the selected tensors. Errors name the tensor; a
// listed (layer, expert) outside the model is INVALID_ARGUMENT.
absl::StatusOr<ModelWeights> LoadModelWeights(
    std::shared_ptr<Checkpoint> checkpoint, const WeightSelection& selection);

// Opens the checkpoint in `model_dir` and loads the selection; with
// `populate` the mapped pages of the shards it opens are faulted in at once
// (servers want resident weights).
absl::StatusOr<ModelWeights> LoadModelWeightsFromDir(
    const std::string& model_dir, const WeightSelection& selection,
    bool populate);

// Bytes of the weights one token reads in a batch-1 decode step: non-expert
// weights of every layer, the router gates, k experts per MoE layer, the
// final norm and lm_head (plus one embedding row).
int64_t ActiveWeightBytesPerToken(const ModelWeights& weights);

}  // namespace moe

#endif  // MOE_CORE_MODEL_WEIGHTS_H_
