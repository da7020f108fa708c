// Random checkpoints in the Hugging Face layout, for any supported family,
// size, dtype and shard count; deterministic by seed. Used by moe-mkmodel,
// tests and benchmarks.
#ifndef MOE_CORE_MODEL_GENERATOR_H_
#define MOE_CORE_MODEL_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/dtype.h"
#include "core/model_config.h"

namespace moe {

struct GeneratorSpec {
  ModelConfig config;  // family, sizes and every family-specific field
  DType dtype = DType::kBF16;
  int num_shards = 1;  // > 1: model-0000i-of-0000n.safetensors + index
  uint64_t seed = 0;
  // Skewed routing, for load-balancing tests and benchmarks: every
  // embedding row gets a shared all-ones component (so every hidden state
  // has a positive mean), every MoE layer's router-gate rows are drawn with
  // their mean removed, and the rows of these experts are centred so that
  // their logits gain `hot_gate_bias` times the mean of the normalised
  // hidden state: they win the top-k for most tokens whatever the prompt.
  // Empty: no bias (the files are those of a spec without these fields).
  std::vector<int> hot_experts = {};
  float hot_gate_bias = 0.0f;
};

// A small config of `family` with every field the family uses set (e.g.
// Qwen2-MoE gets a dense layer and a shared expert, Qwen3-MoE an explicit
// head_dim, OLMoE q/k norms), for tests and the demo.
ModelConfig SmallConfig(ModelFamily family);

// Writes config.json and the weights of `spec` into `dir` (created if
// missing). Weights are random with scale 1/sqrt(fan_in); norm weights near 1.
// Same spec and seed -> byte-identical files. `progress(done, total)` reports
// bytes written.
absl::Status GenerateModel(
    const std::string& dir, const GeneratorSpec& spec,
    const std::function<void(int64_t, int64_t)>& progress = nullptr);

}  // namespace moe

#endif  // MOE_CORE_MODEL_GENERATOR_H_
