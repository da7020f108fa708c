// Keeps the placement of an attention server that dispatches its MoE steps
// itself (--moe_dispatch=direct) equal to the router's, and reports its
// load to the router's rebalancing: a thread long-polls
// RouterService.WatchPlacement (each poll carries the tokens per layer and
// expert dispatched so far) and, when a rebalance moved experts,
// switches the local RouterEngine to the new placement between two plans,
// waits for the calls planned with the old one, and acknowledges the new
// version with its next poll (the router unloads old experts only then).
// A router that cannot be reached is polled again every second; until
// then the old placement stays, whose experts the router keeps loaded.
#ifndef MOE_ATTENTION_SERVER_PLACEMENT_FOLLOWER_H_
#define MOE_ATTENTION_SERVER_PLACEMENT_FOLLOWER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpcpp/client_context.h"
#include "moe/v1/router.grpc.pb.h"
#include "router/router_engine.h"
#include "router/router_metrics.h"

namespace moe {

class PlacementFollower {
 public:
  // `engine` and `metrics` are borrowed and must outlive this. `version`:
  // the router's version of the placement `engine` starts with. Starts the
  // polling thread.
  PlacementFollower(const std::string& router_address, std::string name,
                    uint64_t version, RouterEngine* engine,
                    RouterMetrics* metrics);
  // Cancels the poll in flight and joins the thread.
  ~PlacementFollower();

  // The router's version of the placement in use.
  uint64_t version() const;

 private:
  void Loop();
  // Applies one update; false (and says why on stderr) when it does not fit.
  bool Apply(const v1::PlacementUpdate& update);

  const std::string name_;
  RouterEngine* engine_;
  RouterMetrics* metrics_;
  std::unique_ptr<v1::RouterService::Stub> stub_;
  mutable absl::Mutex mu_;
  uint64_t version_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* in_flight_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_PLACEMENT_FOLLOWER_H_
