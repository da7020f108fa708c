#include "tools/moe_loadgen/arrivals.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace moe::loadgen {

absl::StatusOr<ArrivalKind> ParseArrivalKind(const std::string& name) {
  if (name == "poisson") return ArrivalKind::kPoisson;
  if (name == "gamma") return ArrivalKind::kGamma;
  if (name == "concurrency") return ArrivalKind::kConcurrency;
  return absl::InvalidArgumentError(absl::StrCat(
      "--arrival must be poisson, gamma or concurrency, not \"", name, "\""));
}

std::string ArrivalKindName(ArrivalKind kind) {
  switch (kind) {
    case ArrivalKind::kPoisson:
      return "poisson";
    case ArrivalKind::kGamma:
      return "gamma";
    case ArrivalKind::kConcurrency:
      return "concurrency";
    case ArrivalKind::kTrace:
      return "trace";
  }
  return "?";
}

absl::StatusOr<std::vector<double>> ArrivalOffsets(ArrivalKind kind, int n,
                                                   double rate,
                                                   double burstiness,
                                                   uint64_t seed) {
  std::vector<double> offsets(std::max(0, n), 0.0);
  if (kind == ArrivalKind::kConcurrency || kind == ArrivalKind::kTrace) {
    return offsets;
  }
  if (!(rate > 0) || !std::isfinite(rate)) {
    return absl::InvalidArgumentError("--rate must be > 0 requests/s");
  }
  const double shape = kind == ArrivalKind::kPoisson ? 1.0 : burstiness;
  if (!(shape > 0) || !std::isfinite(shape)) {
    return absl::InvalidArgumentError("--burstiness must be > 0");
  }
  // Gamma(shape, scale) has mean shape * scale = 1 / rate; shape 1 is the
  // exponential distribution of a Poisson process.
  std::mt19937_64 rng(seed);
  std::gamma_distribution<double> gap(shape, 1.0 / (rate * shape));
  double t = 0;
  for (double& offset : offsets) {
    t += gap(rng);
    offset = t;
  }
  return offsets;
}

}  // namespace moe::loadgen
