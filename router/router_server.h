// A router server: asks each expert server what it hosts, builds the
// placement table, loads the gates and serves moe.v1.RouterService,
// grpc.health.v1 and server reflection.
#ifndef MOE_ROUTER_ROUTER_SERVER_H_
#define MOE_ROUTER_ROUTER_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backends.h"
#include "core/nccl_data_plane.h"
#include "grpcpp/server.h"
#include "prometheus/registry.h"
#include "router/moe_dispatcher.h"
#include "router/rebalancer.h"
#include "router/router_engine.h"
#include "router/router_metrics.h"
#include "router/router_service.h"

namespace moe {

struct RouterServerOptions {
  std::string listen_address = "127.0.0.1:0";
  // Expert servers; index = server id in the placement table.
  std::vector<std::string> expert_addresses;
  RouterEngineOptions engine;
  // How long to wait for every expert server to answer GetPlacement.
  double connect_timeout_seconds = 30;
  // Deadline of each fan-out call to an expert server.
  double fanout_timeout_seconds = 10;
  // How often every expert server's health is probed (ExpertHealth).
  double health_probe_seconds = 1;
  // Where the router's metrics go (deploy/metrics.md); null = a private
  // registry nobody scrapes.
  std::shared_ptr<prometheus::Registry> registry;
  bool metrics_per_expert = true;  // the `expert` label on token counters
  // kNccl: the groups' rows go GPU to GPU from `device` (a CUDA device) to
  // every expert server (router/nccl_expert_link.h), which must join within
  // `connect_timeout_seconds`, or Start fails naming it.
  DataPlane data_plane = DataPlane::kGrpc;
  DeviceSpec device;
  // Calls to expert servers on this host over shared memory
  // (router/shm_expert_link.h); the gRPC stream otherwise.
  ShmLinkOptions shared_memory;
  // Online expert rebalancing (router/rebalancer.h): its period (0: only on
  // a Rebalance call), gain threshold and slot budget.
  RebalanceOptions rebalance;
};

// Builds the placement from the expert servers' GetPlacement answers.
// UNAVAILABLE naming the server that did not answer in time.
absl::StatusOr<PlacementTable> DiscoverPlacement(
    const std::vector<std::string>& addresses, double timeout_seconds);

class RouterServer {
 public:
  static absl::StatusOr<std::unique_ptr<RouterServer>> Start(
      const RouterServerOptions& options);
  ~RouterServer();

  int port() const { return port_; }
  RouterEngine& engine() { return *engine_; }
  Rebalancer& rebalancer() { return *rebalancer_; }

  void Shutdown(double grace_seconds = 5.0);
  void Wait();

 private:
  RouterServer() = default;
  std::unique_ptr<RouterEngine> engine_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<MoeDispatcher> dispatcher_;
  std::unique_ptr<PlacementFollowers> followers_;
  std::unique_ptr<Rebalancer> rebalancer_;  // used by service_'s threads
  std::unique_ptr<RouterServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace moe

#endif  // MOE_ROUTER_ROUTER_SERVER_H_
