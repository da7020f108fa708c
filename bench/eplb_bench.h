// The online-rebalancing (EPLB) measurement of moe-cluster-bench: decode
// step time under a skewed load before and after a rebalance, and the
// longest step while the experts move.
#ifndef MOE_BENCH_EPLB_BENCH_H_
#define MOE_BENCH_EPLB_BENCH_H_

#include <string>

#include "bench/bench_cluster.h"
#include "moe/v1/router.pb.h"

namespace moe::bench {

struct EplbResult {
  // Seconds per decode step (batch / tokens per s) of the same requests,
  // best of the runs on each placement.
  double step_before_seconds = 0;
  double step_after_seconds = 0;
  // Inter-token gaps of the streams open during the migration: the median
  // of those that ended before it began, and the longest that overlapped
  // it (the step that was running when it began, to the first step that
  // began after it ended).
  double median_step_seconds = 0;
  double migration_max_step_seconds = 0;
  v1::RebalanceResponse rebalance;
};

// On `cluster` (hot experts all on one expert server; router or direct
// dispatch, the router rebalances either way):
// `batch` concurrent greedy streams of `steps` tokens, the same prompts
// before and after; in between, `batch` longer streams during which the
// router rebalances (RouterService.Rebalance at `router`). Dies naming the
// problem when a stream fails or the rebalance is not applied.
EplbResult MeasureEplb(BenchCluster& cluster, const std::string& router,
                       int vocab, int batch, int steps, int repeats);

}  // namespace moe::bench

#endif  // MOE_BENCH_EPLB_BENCH_H_
