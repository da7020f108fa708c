// gRPC adapter of the router: RunMoe decodes the hidden states, plans the
// dispatch with the RouterEngine, fans the groups out to the expert servers
// in parallel with the callback API, and finishes once every server has
// answered. Never blocks inside a callback.
#ifndef MOE_ROUTER_ROUTER_SERVICE_H_
#define MOE_ROUTER_ROUTER_SERVICE_H_

#include <memory>
#include <string>
#include <vector>

#include "moe/v1/expert.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "router/router_engine.h"

namespace moe {

class RouterServiceImpl final : public v1::RouterService::CallbackService {
 public:
  // `engine` is borrowed. `expert_stubs[s]` talks to server id s of the
  // engine's placement. `fanout_timeout_seconds` bounds each expert call.
  RouterServiceImpl(
      RouterEngine* engine,
      std::vector<std::unique_ptr<v1::ExpertService::Stub>> expert_stubs,
      std::vector<std::string> expert_addresses, double fanout_timeout_seconds);

  grpc::ServerUnaryReactor* RunMoe(grpc::CallbackServerContext* context,
                                   const v1::RunMoeRequest* request,
                                   v1::RunMoeResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetRouterStatsRequest* request,
                                     v1::RouterStats* response) override;

 private:
  RouterEngine* engine_;
  std::vector<std::unique_ptr<v1::ExpertService::Stub>> stubs_;
  std::vector<std::string> addresses_;
  double fanout_timeout_seconds_;
};

}  // namespace moe

#endif  // MOE_ROUTER_ROUTER_SERVICE_H_
