// The figures of one load run, as `vllm bench serve` reports them: latency
// distributions (TTFT, TPOT, ITL, e2e), throughput, goodput under SLOs, and
// errors by status code.
#ifndef MOE_TOOLS_MOE_LOADGEN_SUMMARY_H_
#define MOE_TOOLS_MOE_LOADGEN_SUMMARY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tools/moe_loadgen/load_runner.h"

namespace moe::loadgen {

// Milliseconds; all 0 (count 0) for no values. Percentiles interpolate
// linearly between the closest ranks (numpy's default).
struct Distribution {
  int64_t count = 0;
  double mean = 0;
  double median = 0;
  double p90 = 0;
  double p99 = 0;
};

// Service-level objectives, milliseconds; a request meets them when it
// completed and each one set holds.
struct Slo {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  std::optional<double> e2el_ms;
  bool empty() const { return !ttft_ms && !tpot_ms && !e2el_ms; }
};

// Parses "--goodput ttft:500 tpot:50 e2el:10000" (space- or
// comma-separated KEY:MS pairs). INVALID_ARGUMENT naming the bad pair.
absl::StatusOr<Slo> ParseSlo(const std::string& text);

struct RunSummary {
  std::string arrival;        // poisson, gamma, concurrency, trace
  std::optional<double> rate;  // offered requests/s (poisson, gamma)
  double burstiness = 1;
  int max_concurrency = 0;
  int sent = 0;
  int completed = 0;
  int failed = 0;
  std::map<std::string, int> errors;  // status code name -> count
  double duration_s = 0;
  int64_t input_tokens = 0;   // of completed requests
  int64_t output_tokens = 0;  // received, all requests
  int64_t cached_tokens = 0;
  double request_throughput = 0;       // completed / duration
  double output_token_throughput = 0;  // output tokens / duration
  double total_token_throughput = 0;   // (input + output) / duration
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;
  std::optional<double> goodput;  // requests/s meeting the SLOs
  std::optional<int> good_requests;
  double loadgen_cpu_seconds = 0;
  double loadgen_cpu_us_per_token = 0;
};

Distribution Distribute(std::vector<double> seconds);

RunSummary Summarize(const RunOutput& output, const RunOptions& options,
                     const Slo& slo);

nlohmann::json ToJson(const RunSummary& summary);

}  // namespace moe::loadgen

#endif  // MOE_TOOLS_MOE_LOADGEN_SUMMARY_H_
