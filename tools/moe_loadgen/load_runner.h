// Runs one load: sends a workload's requests to the gateway on their
// arrival schedule (capped at max_concurrency in flight), collects every
// request's result, and shows a live progress line.
#ifndef MOE_TOOLS_MOE_LOADGEN_LOAD_RUNNER_H_
#define MOE_TOOLS_MOE_LOADGEN_LOAD_RUNNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/v1/generate.grpc.pb.h"
#include "tools/moe_loadgen/arrivals.h"
#include "tools/moe_loadgen/stream_call.h"
#include "tools/moe_loadgen/workload.h"

namespace moe::loadgen {

struct RunOptions {
  ArrivalKind arrival = ArrivalKind::kPoisson;
  double rate = 1;        // requests/s (kPoisson, kGamma)
  double burstiness = 1;  // kGamma
  int max_concurrency = 0;  // in flight at most; 0 = no cap
  uint64_t seed = 0;
  double timeout_seconds = 600;  // per request
  // Progress on stderr: rewritten in place on a terminal, a line every 5 s
  // otherwise; none when false.
  bool progress = true;
  std::string label;  // prefix of the progress line ("rate 4/s")
};

struct RunOutput {
  std::vector<RequestResult> results;  // in workload order
  double duration_seconds = 0;  // first send -> last request done
  double cpu_seconds = 0;       // this process's CPU time during the run
};

// Sends `specs` (greedy, ignore_eos, so each asks for exactly max_tokens)
// and waits for all of them. Every request ends up in `results`: completed
// (OK) or failed with its status code. INVALID_ARGUMENT for bad options.
absl::StatusOr<RunOutput> RunLoad(v1::Inference::Stub& stub,
                                  const std::vector<RequestSpec>& specs,
                                  const RunOptions& options);

}  // namespace moe::loadgen

#endif  // MOE_TOOLS_MOE_LOADGEN_LOAD_RUNNER_H_
