#include <cmath>
#include <vector>

#include "core/cpu/kernels.h"

namespace moe::cpu {

// Matches Hugging Face's rotary embedding numerics: inv_freq and the angle
// pos * inv_freq are float32, cos/sin of that float32 angle.
void ApplyRope(float* x, int64_t tokens, int64_t ld, int64_t heads,
               int64_t head_dim, const int32_t* positions, double theta) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent =
        static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  std::vector<float> cos_v(half), sin_v(half);
  for (int64_t t = 0; t < tokens; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos_v[i] = std::cos(angle);
      sin_v[i] = std::sin(angle);
    }
    float* row = x + t * ld;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = row + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_v[i] - b * sin_v[i];
        v[i + half] = b * cos_v[i] + a * sin_v[i];
      }
    }
  }
}

}  // namespace moe::cpu
