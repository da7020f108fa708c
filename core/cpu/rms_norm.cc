#include <cmath>

#include "core/cpu/kernels.h"

namespace moe::cpu {

void RmsNorm(const float* x, int64_t m, int64_t n, int64_t ld,
             const TensorView& weight, float eps, float* y) {
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * ld;
    float* yr = y + r * ld;
    double sum_sq = 0;
    for (int64_t i = 0; i < n; ++i) sum_sq += double{xr[i]} * xr[i];
    const float inv =
        1.0f / std::sqrt(static_cast<float>(sum_sq / n) + eps);
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * inv * weight.At(i);
  }
}

}  // namespace moe::cpu
