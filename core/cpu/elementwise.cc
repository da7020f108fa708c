#include <algorithm>
#include <cmath>

#include "core/cpu/kernels.h"

namespace moe::cpu {

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const float max = *std::max_element(x, x + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void Clamp(float* x, int64_t n, float limit) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::clamp(x[i], -limit, limit);
}

void AddBias(float* y, int64_t m, int64_t ldy, const TensorView& bias) {
  const int64_t n = bias.NumElements();
  for (int64_t r = 0; r < m; ++r) {
    float* row = y + r * ldy;
    for (int64_t i = 0; i < n; ++i) row[i] += bias.At(i);
  }
}

}  // namespace moe::cpu
