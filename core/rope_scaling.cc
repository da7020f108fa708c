#include "core/rope_scaling.h"

#include <algorithm>
#include <cmath>

namespace moe {
namespace {

constexpr double kPi = 3.14159265358979323846;

// The dimension index whose wavelength fits `rotations` turns in the
// original context (YaRN's find_correction_dim).
double CorrectionDim(double rotations, int dim, double base, int max_pos) {
  return (dim * std::log(max_pos / (rotations * 2 * kPi))) /
         (2 * std::log(base));
}

}  // namespace

double YarnMscale(double scale, double mscale) {
  if (scale <= 1) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

RopeTable MlaRopeTable(const ModelConfig& config) {
  const int dim = config.mla.qk_rope_head_dim;
  const int half = dim / 2;
  const double base = config.rope_theta;
  RopeTable table;
  table.inv_freq.resize(half);
  std::vector<double> extra(half);
  for (int i = 0; i < half; ++i) {
    extra[i] = 1.0 / std::pow(base, static_cast<double>(2 * i) / dim);
  }
  const YarnScaling& y = config.yarn;
  if (!y.enabled()) {
    for (int i = 0; i < half; ++i) table.inv_freq[i] = static_cast<float>(extra[i]);
    return table;
  }
  const int orig = y.original_max_position_embeddings;
  const double low = std::max(
      std::floor(CorrectionDim(y.beta_fast, dim, base, orig)), 0.0);
  double high = std::min(std::ceil(CorrectionDim(y.beta_slow, dim, base, orig)),
                         static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // no division by zero in the ramp
  for (int i = 0; i < half; ++i) {
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    const double extrapolate = 1.0 - ramp;  // 1: keep the original frequency
    const double inter = extra[i] / y.factor;
    table.inv_freq[i] =
        static_cast<float>(inter * (1.0 - extrapolate) + extra[i] * extrapolate);
  }
  table.cos_sin_scale = static_cast<float>(YarnMscale(y.factor, y.mscale) /
                                           YarnMscale(y.factor, y.mscale_all_dim));
  return table;
}

float MlaSoftmaxScale(const ModelConfig& config) {
  double scale = 1.0 / std::sqrt(static_cast<double>(config.mla.qk_head_dim()));
  if (config.yarn.enabled() && config.yarn.mscale_all_dim != 0) {
    const double m = YarnMscale(config.yarn.factor, config.yarn.mscale_all_dim);
    scale *= m * m;
  }
  return static_cast<float>(scale);
}

}  // namespace moe
