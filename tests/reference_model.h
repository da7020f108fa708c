// A deliberately plain forward pass of the supported families, written
// straight from the Hugging Face `transformers` modeling code, for checking
// the engine. It shares no compute code with core/: only the config parser,
// the checkpoint reader and the tensor names. Single-threaded, no KV cache
// (every call recomputes the whole sequence), float32 weights with double
// accumulation. Meant for tiny models and short sequences only: every weight
// is widened to float32 in memory at load.
#ifndef MOE_TESTS_REFERENCE_MODEL_H_
#define MOE_TESTS_REFERENCE_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model_config.h"
#include "gtest/gtest.h"

namespace moe::testing {

// Test-only switches that leave out one family-specific piece of the
// computation. A reference with a piece left out must disagree with the
// engine, which shows that the tests comparing the two would catch an engine
// that forgot it. All false: the model as Hugging Face computes it.
struct ReferenceAblation {
  bool skip_qk_norm = false;             // Qwen3-MoE per-head / OLMoE q,k norm
  bool skip_clip_qkv = false;            // OLMoE clip_qkv
  bool skip_shared_expert_gate = false;  // shared expert added unscaled
  bool ignore_sliding_window = false;    // full causal attention
  bool flip_norm_topk_prob = false;      // the opposite renormalisation rule
};

class ReferenceModel {
 public:
  // Reads config.json and every tensor the config needs from `dir`.
  static absl::StatusOr<ReferenceModel> Load(
      const std::string& dir, const ReferenceAblation& ablation = {});

  const ModelConfig& config() const { return config_; }

  // Logits [vocab] of the last position of `tokens` (non-empty).
  std::vector<float> Logits(const std::vector<int32_t>& tokens) const;

  // Logits of every position: [tokens.size()][vocab]. Row i is what
  // Logits(first i + 1 tokens) returns (causal attention), so one call gives
  // the teacher-forced logits of every step of a known continuation.
  std::vector<std::vector<float>> AllLogits(
      const std::vector<int32_t>& tokens) const;

  // Per layer, the expert ids chosen for the last token of `tokens` in top-k
  // order (descending probability, ties to the lower id); empty for a dense
  // layer.
  std::vector<std::vector<int>> RoutingOfLastToken(
      const std::vector<int32_t>& tokens) const;

  // Greedy continuation of `prompt` by `n` tokens (argmax, lowest id on ties),
  // recomputing the whole sequence for every token.
  std::vector<int32_t> Greedy(const std::vector<int32_t>& prompt, int n) const;

 private:
  // Row-major [rows, cols] matrix, the layout of a PyTorch Linear weight.
  struct Matrix {
    int rows = 0;
    int cols = 0;
    std::vector<float> data;
  };
  struct Ffn {
    Matrix gate, up, down;  // [I, H], [I, H], [H, I]
  };
  struct Layer {
    std::vector<float> input_norm, post_attention_norm;
    Matrix q, k, v, o;
    std::vector<float> q_bias, k_bias, v_bias, o_bias;  // empty: no bias
    std::vector<float> q_norm, k_norm;                  // empty: no qk norm
    bool moe = false;
    Ffn dense;      // dense layers
    Matrix router;  // [experts, H]
    std::vector<Ffn> experts;
    bool has_shared = false;
    Ffn shared;
    Matrix shared_gate;  // [1, H]
  };
  struct ForwardResult {
    std::vector<std::vector<float>> logits;  // per requested position
    std::vector<std::vector<int>> last_routing;
  };

  ReferenceModel() = default;

  // Runs the whole sequence; logits for every position when `all_logits`,
  // else for the last one only.
  ForwardResult Forward(const std::vector<int32_t>& tokens,
                        bool all_logits) const;

  static std::vector<double> Linear(const Matrix& w,
                                    const std::vector<float>& bias,
                                    const std::vector<double>& x);
  std::vector<double> RmsNorm(const std::vector<double>& x,
                              const std::vector<float>& weight) const;
  static std::vector<double> RunFfn(const Ffn& ffn,
                                    const std::vector<double>& x);
  // Self-attention of every position of `x` (normed hidden states), through
  // o_proj.
  std::vector<std::vector<double>> Attention(
      const Layer& layer, const std::vector<std::vector<double>>& x) const;
  struct MoeOutput {
    std::vector<double> out;
    std::vector<int> experts;  // chosen, in top-k order
  };
  MoeOutput Moe(const Layer& layer, const std::vector<double>& x) const;

  ModelConfig config_;
  ReferenceAblation ablation_;
  Matrix embed_;
  Matrix lm_head_;  // empty data when tied to embed_
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
};

// The expected outputs of a reference fixture (fixtures/<name>/expected.json;
// see tests/data/fixtures/README.md).
struct FixtureStep {
  int32_t token = 0;
  std::vector<float> logits;  // [vocab], teacher-forced along the greedy path
};
struct FixtureCase {
  std::vector<int32_t> prompt;
  std::vector<FixtureStep> steps;
  // Per layer, the experts chosen for the prompt's last token in top-k order;
  // empty for a dense layer (null in the JSON).
  std::vector<std::vector<int>> prompt_routing_last_token;

  // The generated tokens, in order.
  std::vector<int32_t> Tokens() const;
  // The prompt followed by every generated token but the last: row
  // prompt.size() - 1 + s of a causal forward over it gives step s's logits.
  std::vector<int32_t> TeacherForcedSequence() const;
};

// Parses `fixture_dir`/expected.json.
absl::StatusOr<std::vector<FixtureCase>> LoadFixtureCases(
    const std::string& fixture_dir);

// Success when both have the same size and every |actual[i] - expected[i]| <=
// tolerance; the failure message names the worst index and both values.
::testing::AssertionResult LogitsNear(const std::vector<float>& actual,
                                      const std::vector<float>& expected,
                                      double tolerance);

// Largest |a[i] - b[i]| (infinity on a size mismatch or NaN).
double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b);

// Index of the largest logit, lowest id on ties.
int32_t ArgMax(const std::vector<float>& logits);
// Largest minus second-largest logit.
double TopTwoMargin(const std::vector<float>& logits);

}  // namespace moe::testing

#endif  // MOE_TESTS_REFERENCE_MODEL_H_
