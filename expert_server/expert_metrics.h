// The expert server's Prometheus metrics (deploy/metrics.md, "Expert
// servers"): tokens and groups by layer (and expert), tokens per group,
// compute time per call, tensor bytes in and out, experts hosted.
#ifndef MOE_EXPERT_SERVER_EXPERT_METRICS_H_
#define MOE_EXPERT_SERVER_EXPERT_METRICS_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "expert_server/expert_engine.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace moe {

// Thread-safe. Series are created up front for the hosted experts, and by
// AddExperts for experts loaded later, so recording never allocates or
// takes a registry lock.
class ExpertMetrics {
 public:
  // Registers the families in `registry` (which must outlive this object).
  // `per_expert` false drops the `expert` label from the token counter.
  ExpertMetrics(prometheus::Registry& registry,
                const std::vector<std::pair<int, int>>& hosted_experts,
                bool per_expert);

  // Creates the series of experts loaded after start (idempotent).
  void AddExperts(const std::vector<std::pair<int, int>>& experts);
  // moe_expert_hosted_experts.
  void SetHostedExperts(int64_t count);

  // One call: its validated groups, tensor bytes received and sent, and the
  // compute seconds it took.
  void RecordCall(absl::Span<const ExpertWork> work, int64_t bytes_in,
                  int64_t bytes_out, double compute_seconds);

 private:
  bool per_expert_;
  prometheus::Family<prometheus::Counter>* tokens_family_;
  prometheus::Family<prometheus::Counter>* groups_family_;
  prometheus::Gauge* hosted_;
  absl::Mutex mu_;  // writers: AddExperts; readers: RecordCall
  absl::flat_hash_map<std::pair<int, int>, prometheus::Counter*> tokens_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int, prometheus::Counter*> tokens_by_layer_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int, prometheus::Counter*> groups_ ABSL_GUARDED_BY(mu_);
  prometheus::Histogram* group_tokens_;
  prometheus::Histogram* compute_seconds_;
  prometheus::Counter* received_bytes_;
  prometheus::Counter* sent_bytes_;
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVER_EXPERT_METRICS_H_
