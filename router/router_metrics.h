// The router's Prometheus metrics (deploy/metrics.md, "Router"): slots per
// layer and expert, overflow, balancedness, fan-out latency, which servers
// and replicas took the slots, expert servers marked down, and NCCL data
// plane links that broke.
#ifndef MOE_ROUTER_ROUTER_METRICS_H_
#define MOE_ROUTER_ROUTER_METRICS_H_

#include <atomic>
#include <memory>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model_config.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "router/dispatch_plan.h"
#include "router/expert_connection.h"
#include "router/placement_table.h"

namespace moe {

// Thread-safe; every series is created up front (bounded by the model and
// the topology), so recording takes no registry lock.
class RouterMetrics {
 public:
  // `registry` must outlive this object. `placement` (copied) is used for
  // plans that carry none (DispatchPlan::placement). `per_expert` false
  // drops the `expert` label from moe_router_tokens_total.
  RouterMetrics(prometheus::Registry& registry, const ModelConfig& config,
                const PlacementTable& placement,
                const std::vector<std::string>& server_addresses,
                bool per_expert);

  // A planned batch of one layer: its per-expert counts and where its slots
  // went.
  void RecordPlan(const DispatchPlan& plan);
  // The fan-out of one planned batch took `seconds`.
  void RecordFanOut(double seconds);
  // Expert server `server` was marked up or down (ExpertHealth's
  // transitions).
  void RecordServerState(int server, bool up);
  // The NCCL data plane to expert server `server` broke: its calls went
  // back to gRPC bytes.
  void RecordDataPlaneFallback(int server);
  // One call to expert server `server` and the transport it took
  // (moe_router_expert_calls_total).
  void RecordExpertCall(int server, ExpertConnection::Transport transport);
  // A rebalance ended with `result` ("applied", "skipped" or "failed") and
  // these imbalance ratios (ignored for "failed").
  void RecordRebalance(const std::string& result, double imbalance_before,
                       double imbalance_after);
  // moe_router_server_experts from the current placement.
  void SetServerExperts(const PlacementTable& placement);

 private:
  struct LayerSeries {
    std::vector<prometheus::Counter*> tokens;  // [experts], or [1] per layer
    prometheus::Counter* overflowed = nullptr;
    prometheus::Counter* rerouted = nullptr;
    prometheus::Counter* dropped = nullptr;
    prometheus::Gauge* balancedness = nullptr;
  };
  struct ServerSeries {
    prometheus::Counter* dispatched = nullptr;
    prometheus::Counter* replica_choices = nullptr;
    prometheus::Gauge* up = nullptr;
    prometheus::Counter* down = nullptr;
    prometheus::Counter* data_plane_fallbacks = nullptr;
    prometheus::Gauge* experts = nullptr;
    prometheus::Counter* calls_nccl = nullptr;
    prometheus::Counter* calls_shared_memory = nullptr;
    prometheus::Counter* calls_grpc_stream = nullptr;
  };

  const PlacementTable placement_;
  bool per_expert_;
  std::vector<LayerSeries> layers_;  // [num_layers]; dense layers unused
  std::vector<ServerSeries> servers_;
  prometheus::Histogram* fanout_seconds_;
  std::map<std::string, prometheus::Counter*> rebalances_;
  prometheus::Gauge* imbalance_before_ = nullptr;
  prometheus::Gauge* imbalance_after_ = nullptr;
};

}  // namespace moe

#endif  // MOE_ROUTER_ROUTER_METRICS_H_
