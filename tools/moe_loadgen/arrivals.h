// When moe-loadgen sends each request of a run.
#ifndef MOE_TOOLS_MOE_LOADGEN_ARRIVALS_H_
#define MOE_TOOLS_MOE_LOADGEN_ARRIVALS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::loadgen {

// kPoisson: exponential gaps at `rate` requests/s (burstiness 1).
// kGamma: gamma-distributed gaps with mean 1/rate and shape `burstiness`
//   (< 1 burstier than Poisson, > 1 more regular), as `vllm bench serve`.
// kConcurrency: closed loop: every request is due at once and the number
//   in flight is capped (the runner's max_concurrency).
// kTrace: the trace's own timestamps.
enum class ArrivalKind { kPoisson, kGamma, kConcurrency, kTrace };

absl::StatusOr<ArrivalKind> ParseArrivalKind(const std::string& name);
std::string ArrivalKindName(ArrivalKind kind);

// Send offsets in seconds from the run's start, non-decreasing, for `n`
// requests (kPoisson, kGamma, kConcurrency). The first gap is drawn too,
// so a run does not start with a burst. INVALID_ARGUMENT for rate <= 0 or
// burstiness <= 0 where they matter.
absl::StatusOr<std::vector<double>> ArrivalOffsets(ArrivalKind kind, int n,
                                                   double rate,
                                                   double burstiness,
                                                   uint64_t seed);

}  // namespace moe::loadgen

#endif  // MOE_TOOLS_MOE_LOADGEN_ARRIVALS_H_
