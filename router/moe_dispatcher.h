// One MoE step of one batch across the expert servers: the RouterEngine's
// plan, each server's groups sent over its ExpertConnection in parallel, and
// the weighted combine in the single-process engine's order.
//
// Failures (ExpertHealth keeps which servers are up):
// * Servers marked down take no slots. Tokens gated to an expert with no
//   live replica are listed in the response's failed_tokens, with a
//   failure_message naming the expert, layer and server(s); the other
//   tokens are computed as usual. When every token failed, the call fails
//   with UNAVAILABLE and that message instead.
// * A call that fails with UNAVAILABLE or DEADLINE_EXCEEDED (a dead or hung
//   server; each call waits at most `fanout_timeout_seconds`), or with
//   FAILED_PRECONDITION (a server that lost experts placed on it, e.g. by
//   restarting with other ones), marks its server down, and its groups are sent again to other live replicas of
//   their experts, which compute the same rows bit for bit; groups with no
//   other live replica fail their tokens as above.
#ifndef MOE_ROUTER_MOE_DISPATCHER_H_
#define MOE_ROUTER_MOE_DISPATCHER_H_

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "moe/v1/router.pb.h"
#include "router/expert_connection.h"
#include "router/expert_health.h"
#include "router/router_engine.h"
#include "router/router_metrics.h"

namespace moe {

// Thread-safe.
class MoeDispatcher {
 public:
  // `engine` is borrowed; `connections[s]` reaches server id s of the
  // engine's placement. Each expert call waits at most
  // `fanout_timeout_seconds`; servers are probed every
  // `health_probe_seconds`. Plans, fan-out times and server states are
  // recorded in `metrics` (borrowed, must outlive the dispatcher).
  MoeDispatcher(RouterEngine* engine,
                std::vector<std::unique_ptr<ExpertConnection>> connections,
                double fanout_timeout_seconds, double health_probe_seconds,
                RouterMetrics* metrics);

  // Computes the MoE step of `request` into `response` and runs `done` with
  // OK (possibly with failed_tokens, see above) or the error:
  // INVALID_ARGUMENT naming the field for a bad request, UNAVAILABLE naming
  // the experts, layer and servers when no token could be computed,
  // INTERNAL for a malformed expert answer or a request an expert server
  // refused. `request` and `response` must stay valid
  // until `done` runs, which may happen inside this call or on a gRPC thread.
  // `deadline` further bounds the expert calls (the caller's own deadline).
  void Dispatch(const v1::RunMoeRequest& request,
                std::chrono::system_clock::time_point deadline,
                v1::RunMoeResponse* response,
                std::function<void(absl::Status)> done);

  // For a caller that has one Dispatch outstanding and nothing to do but
  // wait for its `done`: receives the answers of one expert server it has
  // calls in flight to over shared memory, on the calling thread, waiting
  // at most `max_wait` (ExpertConnection::HelpReceive). False at once when
  // no server has such calls (the answers come over gRPC, or have all
  // arrived): then only waiting for `done` is left.
  bool HelpReceive(absl::Duration max_wait);

  RouterEngine& engine() { return *engine_; }
  const ExpertConnection& connection(int server) const {
    return *connections_[server];
  }
  const ExpertHealth& health() const { return *health_; }
  // See ExpertHealth::SetAdmission.
  void SetAdmission(ExpertHealth::Admission admission) {
    health_->SetAdmission(std::move(admission));
  }
  int num_servers() const { return static_cast<int>(connections_.size()); }
  double fanout_timeout_seconds() const { return fanout_timeout_seconds_; }
  double health_probe_seconds() const { return health_probe_seconds_; }

 private:
  RouterEngine* engine_;
  RouterMetrics* metrics_;
  std::vector<std::unique_ptr<ExpertConnection>> connections_;
  double fanout_timeout_seconds_;
  double health_probe_seconds_;
  std::unique_ptr<ExpertHealth> health_;
};

}  // namespace moe

#endif  // MOE_ROUTER_MOE_DISPATCHER_H_
