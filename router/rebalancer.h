// Online expert rebalancing (EPLB) without stopping the router.
//
// A rebalance takes the per-(layer, expert) tokens of the load window: the
// last `window_seconds` (a sliding window over counts sampled every
// window / 16), or, with window_seconds 0, those since the previous
// rebalance (or the router's start). They are
// the router's own dispatches plus those its followers (attention servers
// with --moe_dispatch=direct) report. For each
// MoE layer it plans replica counts and an assignment with
// PlanLayerPlacement (router/eplb.h) under a slot budget per server, and
// compares the predicted imbalance (the sum over layers of the most-loaded
// server's tokens over the sum of the mean server's: layers run one after
// the other, so that is the step time's stretch) with the current
// placement's. When it gains enough, it migrates without blocking a step:
//   1. every server loads the experts it is to gain (LoadExperts, in
//      parallel; batches keep running on the old placement);
//   2. the router switches to the new placement atomically between plans
//      (RouterEngine::SwitchPlacement);
//   3. the followers (attention servers that dispatch with a copy of the
//      placement, router/placement_followers.h) are sent it; once every
//      plan made with the old placement is released (its calls are over),
//      here and at every follower, each server unloads what it no longer
//      hosts. A follower that does not acknowledge in time leaves the old
//      experts loaded (they only cost memory) rather than break its calls.
// A load that fails leaves the placement as it was (extra experts loaded
// on some servers stay until the next rebalance). Greedy tokens do not
// change: the combine order does not depend on placement.
#ifndef MOE_ROUTER_REBALANCER_H_
#define MOE_ROUTER_REBALANCER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "moe/v1/expert.grpc.pb.h"
#include "router/load_window.h"
#include "router/placement_followers.h"
#include "router/router_engine.h"
#include "router/router_metrics.h"

namespace moe {

struct RebalanceOptions {
  // Experts of one layer a server may host; 0: the current placement's
  // largest count on a server in a layer, plus one (room for one replica
  // of a hot expert per server and layer).
  int slots_per_server = 0;
  // Rebalance only when the predicted imbalance falls by at least this
  // fraction: after <= before * (1 - min_gain).
  double min_gain = 0.1;
  // Seconds between automatic rebalances; 0: only on request.
  double period_seconds = 0;
  // How long one server's LoadExperts may take.
  double load_timeout_seconds = 600;
  // How long the followers may take to report their load, and to
  // acknowledge a new placement.
  double follower_timeout_seconds = 60;
  // Expert servers form this many nodes of consecutive ids (servers
  // [n * S / N, (n + 1) * S / N) are node n). Above 1, a model with
  // group-limited gating (DeepSeek's n_group) is placed hierarchically:
  // each expert group, replicas included, on one node
  // (router/eplb_hierarchical.h).
  int num_nodes = 1;
  // The load window: the last this many seconds; 0: since the previous
  // rebalance.
  double window_seconds = 0;
  // How often the window samples the counts; 0: window_seconds / 16
  // (at least 0.05 s).
  double window_sample_seconds = 0;
  // The clock of the window's samples (tests pass a fake); null: absl::Now.
  std::function<absl::Time()> clock;
};

struct RebalanceResult {
  bool applied = false;
  std::string reason;  // why not, when not applied
  double imbalance_before = 1;  // of the window under the old placement
  double imbalance_after = 1;   // predicted under the new one
  int64_t window_tokens = 0;
  int loaded = 0;    // (layer, expert, server) triples added
  int unloaded = 0;  // and removed
  double seconds = 0;
  std::string policy = "flat";  // or "hierarchical (N nodes, G groups)"
  double window_seconds = 0;  // the span the window's tokens cover
};

// Thread-safe; one rebalance runs at a time.
class Rebalancer {
 public:
  // `engine`, `followers` and `metrics` are borrowed; `addresses[s]` is
  // server id s. Publishes the current placement to `followers`, and
  // starts the periodic thread when options.period_seconds > 0.
  Rebalancer(RouterEngine* engine, std::vector<std::string> addresses,
             RebalanceOptions options, PlacementFollowers* followers,
             RouterMetrics* metrics);
  ~Rebalancer();

  // Plans and, when it gains at least min_gain (or `force`, when it gains
  // anything), migrates. Errors: the planner's INVALID_ARGUMENT (a slot
  // budget too small for the layer), UNAVAILABLE naming the server whose
  // LoadExperts failed (nothing switched then).
  absl::StatusOr<RebalanceResult> Rebalance(bool force);

  // The health probe's admission check (ExpertHealth::Admission): makes
  // server `server` host exactly what the current placement gives it. Asks
  // it what it hosts (GetPlacement); when that differs (a server restarted
  // with its old --experts, or with --experts=none), loads what it lacks
  // and unloads what it no longer hosts, then answers OK. Errors name the
  // server and the call that failed; the server stays down until a later
  // probe succeeds. While a rebalance runs it changes nothing and answers
  // `up` (OK for a server already up, UNAVAILABLE for one down); while a
  // follower has not acknowledged the current placement it loads but does
  // not unload.
  absl::Status Admit(int server, bool up);

  // Records the counts so far (the router's and its followers' last
  // reports) in the sliding window, at the options' clock. The sampler
  // thread calls it every window_sample_seconds; a no-op without a window.
  void SampleLoad();

 private:
  absl::StatusOr<RebalanceResult> RebalanceLocked(bool force)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Calls Load/UnloadExperts on every server with work, in parallel; the
  // first error names its server.
  absl::Status ChangeExperts(
      bool load, const std::vector<std::vector<LayerExpert>>& per_server);
  void PeriodicLoop();
  void SamplerLoop();
  absl::Time Now() const;
  // Tokens per [layer][expert] so far: the router's own dispatches plus
  // what its followers report (asked for fresh reports first).
  std::vector<std::vector<int64_t>> CurrentLoad();
  absl::Status AdmitLocked(int server) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  RouterEngine* engine_;
  std::vector<std::string> addresses_;
  std::vector<std::unique_ptr<v1::ExpertService::Stub>> stubs_;
  RebalanceOptions options_;
  PlacementFollowers* followers_;
  RouterMetrics* metrics_;
  absl::Mutex mu_;
  // Per (layer, expert) tokens at the start of the window.
  // Per (layer, expert) tokens at the start of the window, and when (with
  // window_seconds 0).
  std::vector<std::vector<int64_t>> window_start_ ABSL_GUARDED_BY(mu_);
  absl::Time window_start_time_ ABSL_GUARDED_BY(mu_);
  // The sliding window (with window_seconds > 0); its own lock, as a
  // rebalance holds mu_ for as long as servers load.
  absl::Mutex window_mu_;
  std::unique_ptr<LoadWindow> window_ ABSL_GUARDED_BY(window_mu_);
  absl::Notification stop_;
  std::thread periodic_;
  std::thread sampler_;
};

}  // namespace moe

#endif  // MOE_ROUTER_REBALANCER_H_
