// loadgen_self_cpu_fraction: moe-loadgen's own CPU time per streamed token
// against the cluster's, measured in the same run, so that the load
// generator is shown never to be the bottleneck of a load test.
#ifndef MOE_BENCH_LOADGEN_BENCH_H_
#define MOE_BENCH_LOADGEN_BENCH_H_

#include <cstdint>
#include <string>

#include "bench/bench_cluster.h"

namespace moe::bench {

struct LoadgenCpuResult {
  int64_t tokens = 0;                   // output tokens streamed
  double loadgen_cpu_us_per_token = 0;  // moe-loadgen's own CPU
  double servers_cpu_us_per_token = 0;  // all of the cluster's servers
  double fraction = 0;                  // loadgen / servers
  double output_token_throughput = 0;
};

// Runs `loadgen` (the moe-loadgen binary) against `cluster`'s gateway:
// closed loop, `concurrency` in flight, `requests` requests of 32 prompt
// and 64 output tokens, its JSON in `work_dir`/loadgen.json. The servers'
// CPU is read from /proc around the run. Dies with moe-loadgen's output when
// it fails.
LoadgenCpuResult MeasureLoadgenCpu(BenchCluster& cluster,
                                   const std::string& loadgen,
                                   const std::string& work_dir, int requests,
                                   int concurrency);

}  // namespace moe::bench

#endif  // MOE_BENCH_LOADGEN_BENCH_H_
