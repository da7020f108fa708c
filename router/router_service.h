// gRPC adapter of the router: RunMoe (unary) and MoeStream (one long-lived
// stream per attention server) hand each batch to the MoeDispatcher, which
// fans it out to the expert servers; GetStats reports the dispatch counts;
// GetDispatchConfig hands attention servers what they need to dispatch
// themselves, and WatchPlacement tells them when a rebalance moved experts.
// Never blocks inside a callback.
#ifndef MOE_ROUTER_ROUTER_SERVICE_H_
#define MOE_ROUTER_ROUTER_SERVICE_H_

#include "moe/v1/router.grpc.pb.h"
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "router/moe_dispatcher.h"
#include "router/placement_followers.h"
#include "router/rebalancer.h"

namespace moe {

class RouterServiceImpl final : public v1::RouterService::CallbackService {
 public:
  // Every argument is borrowed and must outlive the service.
  RouterServiceImpl(MoeDispatcher* dispatcher, Rebalancer* rebalancer,
                    PlacementFollowers* followers)
      : dispatcher_(dispatcher),
        rebalancer_(rebalancer),
        followers_(followers) {}
  // Waits for rebalances in progress.
  ~RouterServiceImpl() override;

  grpc::ServerUnaryReactor* RunMoe(grpc::CallbackServerContext* context,
                                   const v1::RunMoeRequest* request,
                                   v1::RunMoeResponse* response) override;
  grpc::ServerBidiReactor<v1::RunMoeRequest, v1::RunMoeResponse>* MoeStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetRouterStatsRequest* request,
                                     v1::RouterStats* response) override;
  grpc::ServerUnaryReactor* GetDispatchConfig(
      grpc::CallbackServerContext* context,
      const v1::GetDispatchConfigRequest* request,
      v1::DispatchConfig* response) override;
  grpc::ServerUnaryReactor* WatchPlacement(
      grpc::CallbackServerContext* context,
      const v1::WatchPlacementRequest* request,
      v1::PlacementUpdate* response) override;
  // Runs the rebalance on its own thread: it waits for weight loads and for
  // expert calls to drain.
  grpc::ServerUnaryReactor* Rebalance(grpc::CallbackServerContext* context,
                                      const v1::RebalanceRequest* request,
                                      v1::RebalanceResponse* response) override;

 private:
  MoeDispatcher* dispatcher_;
  Rebalancer* rebalancer_;
  PlacementFollowers* followers_;
  absl::Mutex mu_;
  std::vector<std::thread> rebalances_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_ROUTER_ROUTER_SERVICE_H_
