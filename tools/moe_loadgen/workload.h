// What moe-loadgen sends: the requests of one run, built from random
// lengths, shared prefixes or a replayed trace.
#ifndef MOE_TOOLS_MOE_LOADGEN_WORKLOAD_H_
#define MOE_TOOLS_MOE_LOADGEN_WORKLOAD_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::loadgen {

struct RequestSpec {
  std::vector<int32_t> prompt_ids;
  int max_tokens = 0;
  // Trace replay only: seconds after the run's start to send it.
  std::optional<double> arrival_seconds;
};

// How a length is drawn around its mean `mean`:
//   kFixed        always `mean`;
//   kUniform      uniform in [mean * (1 - range), mean * (1 + range)];
//   kExponential  exponential with that mean (long tail), at least 1.
enum class LengthDistribution { kFixed, kUniform, kExponential };

absl::StatusOr<LengthDistribution> ParseLengthDistribution(
    const std::string& name);

struct RandomWorkload {
  int num_requests = 0;
  int input_len = 128;
  int output_len = 64;
  LengthDistribution distribution = LengthDistribution::kFixed;
  double range_ratio = 0.0;  // kUniform only, in [0, 1)
  // Prompts start with one of `num_prefixes` shared prefixes of
  // `shared_prefix_len` tokens (0: none), chosen round-robin, followed by
  // input_len random tokens: the prefix cache's workload.
  int shared_prefix_len = 0;
  int num_prefixes = 1;
  uint64_t seed = 0;
};

// The model limits requests must respect (from the gateway's
// GetModelInfo): token ids in [0, vocab_size), prompt + output within
// max_context.
struct ModelLimits {
  int vocab_size = 0;
  int max_context = 0;
};

// Random prompts (ids uniform in [1, vocab_size)) with lengths drawn as
// asked; a request whose prompt + output would pass max_context is
// shortened to fit. INVALID_ARGUMENT naming the flag for counts or lengths
// that cannot be met.
absl::StatusOr<std::vector<RequestSpec>> BuildRandomWorkload(
    const RandomWorkload& workload, const ModelLimits& limits);

// A JSON-lines trace, one request per line:
//   {"timestamp": 0.25, "prompt_ids": [1, 2, 3], "output_length": 16}
//   {"timestamp": 0.50, "input_length": 512, "output_length": 64}
// "timestamp" (seconds from the start, non-decreasing) is required, as is
// "output_length" >= 1, and one of "prompt_ids" or "input_length" >= 1
// (random ids). Timestamps are divided by `speed` (2 = twice as fast).
// INVALID_ARGUMENT naming the file, line and field for a bad line.
absl::StatusOr<std::vector<RequestSpec>> LoadTrace(const std::string& path,
                                                   double speed,
                                                   const ModelLimits& limits,
                                                   uint64_t seed);

}  // namespace moe::loadgen

#endif  // MOE_TOOLS_MOE_LOADGEN_WORKLOAD_H_
