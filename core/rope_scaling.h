// Rotary-embedding frequencies of Multi-head Latent Attention (DeepSeek):
// plain RoPE or YaRN over the qk_rope_head_dim dimensions, with YaRN's
// cos/sin magnitude and its softmax-scale correction, as DeepSeek's
// modeling_deepseek.py (DeepseekV2YarnRotaryEmbedding) computes them.
#ifndef MOE_CORE_ROPE_SCALING_H_
#define MOE_CORE_ROPE_SCALING_H_

#include <vector>

#include "core/model_config.h"

namespace moe {

struct RopeTable {
  std::vector<float> inv_freq;  // [rope_dim / 2]: angle = position * inv_freq
  float cos_sin_scale = 1.0f;   // YaRN: both cos and sin are multiplied by it
};

// YaRN's attention magnitude: 1 for scale <= 1, else 0.1 * mscale *
// ln(scale) + 1.
double YarnMscale(double scale, double mscale);

// The rope of `config`'s MLA (plain when config.yarn is not enabled).
RopeTable MlaRopeTable(const ModelConfig& config);

// The attention softmax scale: qk_head_dim^-0.5, times YarnMscale(factor,
// mscale_all_dim)^2 when YaRN is on and mscale_all_dim != 0.
float MlaSoftmaxScale(const ModelConfig& config);

}  // namespace moe

#endif  // MOE_CORE_ROPE_SCALING_H_
