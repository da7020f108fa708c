// A deliberately plain float32 forward pass of the DeepSeek-V2/V3 family
// (Hugging Face `DeepseekV2ForCausalLM` / `DeepseekV3ForCausalLM`, with the
// semantics of DeepSeek's `modeling_deepseek.py` remote code), for checking
// the engine.
//
// It shares nothing with the engine but the safetensors reader, the dtype
// conversions and the status helpers: config.json is parsed here with
// nlohmann::json, not with ParseModelConfig, and every computation is a plain
// loop with double accumulation. Multi-head latent attention is computed in its
// expanded form (k_nope and value materialised per head from kv_b_proj), not
// the absorbed form an engine would use. Single-threaded, no KV cache (every
// call recomputes the whole sequence), every weight widened to float32 at load:
// for tiny models and short sequences only.
#ifndef MOE_TESTS_REFERENCE_DEEPSEEK_H_
#define MOE_TESTS_REFERENCE_DEEPSEEK_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::testing {

// Test-only switches that each leave out one DeepSeek-specific piece of the
// computation, so that a test can show that a comparison with the engine
// would notice an engine that forgot it. All false: the model as Hugging
// Face computes it.
struct DeepseekAblation {
  // Plain RoPE instead of yarn's frequencies and yarn's cos/sin mscale.
  bool skip_yarn = false;
  // Softmax scale without the yarn_get_mscale(factor, mscale_all_dim)^2
  // correction.
  bool skip_yarn_softmax_scale = false;
  // rotate_half on q_pe/k_pe as stored, without the de-interleave
  // permutation.
  bool skip_rope_interleave = false;
  // Experts chosen without e_score_correction_bias.
  bool skip_correction_bias = false;
  // Plain top-k over all experts, whatever topk_method says.
  bool skip_group_limit = false;
  // routed_scaling_factor treated as 1.
  bool skip_routed_scaling = false;
  bool skip_shared_experts = false;
  bool skip_kv_a_layernorm = false;
  bool skip_q_a_layernorm = false;
};

// The DeepSeek fields of config.json, as this reference reads them.
struct DeepseekReferenceConfig {
  bool v3 = false;  // DeepseekV3ForCausalLM (else DeepseekV2ForCausalLM)
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int vocab_size = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  int intermediate_size = 0;  // dense MLP; 0 when every layer is MoE
  int moe_intermediate_size = 0;
  int n_routed_experts = 0;  // 0: no MoE layer
  int n_shared_experts = 0;
  int num_experts_per_tok = 0;
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;
  int n_group = 1;
  int topk_group = 1;
  std::string topk_method;   // "greedy", "group_limited_greedy", "noaux_tc"
  std::string scoring_func;  // "softmax", "sigmoid"
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int q_lora_rank = 0;  // 0: q_proj, no q LoRA
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  // rope_scaling of type yarn; all unused when !yarn.
  bool yarn = false;
  double yarn_factor = 1.0;
  int yarn_original_max_position_embeddings = 4096;
  double yarn_beta_fast = 32.0;
  double yarn_beta_slow = 1.0;
  double yarn_mscale = 1.0;
  double yarn_mscale_all_dim = 0.0;

  int q_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool IsMoeLayer(int layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace &&
           layer % moe_layer_freq == 0;
  }
};

class DeepseekReference {
 public:
  // Reads config.json and every tensor it implies from `dir`
  // (model.safetensors, or the shards a model.safetensors.index.json names).
  // INVALID_ARGUMENT names a missing or bad config field or a tensor of the
  // wrong shape; NOT_FOUND names a missing tensor or file.
  static absl::StatusOr<DeepseekReference> Load(
      const std::string& dir, const DeepseekAblation& ablation = {});

  const DeepseekReferenceConfig& config() const { return config_; }
  int vocab_size() const { return config_.vocab_size; }

  // Every method below takes a non-empty sequence of ids in [0, vocab).

  // Logits [vocab] of the last position of `tokens`.
  std::vector<float> Logits(const std::vector<int32_t>& tokens) const;

  // Logits of every position: [tokens.size()][vocab]; row i equals
  // Logits(first i + 1 tokens) (causal attention).
  std::vector<std::vector<float>> AllLogits(
      const std::vector<int32_t>& tokens) const;

  // Per layer, the routed experts chosen for the last token of `tokens`,
  // sorted ascending by id; empty for a dense layer.
  std::vector<std::vector<int>> RoutingOfLastToken(
      const std::vector<int32_t>& tokens) const;

  // Greedy continuation of `prompt` by `n` tokens (argmax, lowest id on
  // ties), recomputing the whole sequence for every token.
  std::vector<int32_t> Greedy(const std::vector<int32_t>& prompt, int n) const;

 private:
  // Row-major [rows, cols], the layout of a PyTorch Linear weight.
  struct Matrix {
    int rows = 0;
    int cols = 0;
    std::vector<float> data;
  };
  struct Ffn {
    Matrix gate, up, down;  // [I, H], [I, H], [H, I]
  };
  struct Layer {
    std::vector<float> input_norm, post_attention_norm;  // [H]
    Matrix q_proj;                 // [nh * q_head_dim, H]; no q LoRA
    Matrix q_a_proj;               // [q_lora, H]
    std::vector<float> q_a_norm;   // [q_lora]
    Matrix q_b_proj;               // [nh * q_head_dim, q_lora]
    Matrix kv_a_proj;              // [kv_lora + rope, H]
    std::vector<float> kv_a_norm;  // [kv_lora]
    Matrix kv_b_proj;              // [nh * (nope + v), kv_lora]
    Matrix o_proj;                 // [H, nh * v]
    bool moe = false;
    Ffn dense;
    Matrix router;                       // [E, H]
    std::vector<float> correction_bias;  // [E]; empty unless noaux_tc
    std::vector<Ffn> experts;
    bool has_shared = false;
    Ffn shared;
  };
  struct Routing {
    std::vector<int> experts;  // chosen, in selection order
    std::vector<double> weights;
  };
  struct ForwardResult {
    std::vector<std::vector<float>> logits;  // per requested position
    std::vector<std::vector<int>> last_routing;
  };

  DeepseekReference() = default;

  ForwardResult Forward(const std::vector<int32_t>& tokens,
                        bool all_logits) const;
  std::vector<std::vector<double>> Attention(
      const Layer& layer, const std::vector<std::vector<double>>& x) const;
  // Rotates one q_pe/k_pe vector (qk_rope_head_dim values) in place.
  void ApplyRope(double* x, int pos) const;
  Routing Route(const Layer& layer, const std::vector<double>& x) const;
  std::vector<double> RmsNorm(const std::vector<double>& x,
                              const std::vector<float>& weight) const;

  static std::vector<double> Linear(const Matrix& w,
                                    const std::vector<double>& x);
  static std::vector<double> RunFfn(const Ffn& ffn,
                                    const std::vector<double>& x);

  DeepseekReferenceConfig config_;
  DeepseekAblation ablation_;
  // RoPE inverse frequencies [rope / 2] and the factor on cos and sin, with
  // the ablations applied.
  std::vector<double> inv_freq_;
  double rope_mscale_ = 1.0;
  double softmax_scale_ = 1.0;
  Matrix embed_;
  Matrix lm_head_;  // empty data when tied to embed_
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
};

}  // namespace moe::testing

#endif  // MOE_TESTS_REFERENCE_DEEPSEEK_H_
