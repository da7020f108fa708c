#include "router/router_server.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/grpc_status.h"
#include "core/rpc/server_util.h"
#include "core/status_macros.h"
#include "router/eplb_hierarchical.h"

namespace moe {

absl::StatusOr<PlacementTable> DiscoverPlacement(
    const std::vector<std::string>& addresses, double timeout_seconds) {
  if (addresses.empty()) {
    return absl::InvalidArgumentError("router: no expert servers given");
  }
  PlacementTable table(static_cast<int>(addresses.size()));
  const absl::Time deadline = absl::Now() + absl::Seconds(timeout_seconds);
  for (size_t s = 0; s < addresses.size(); ++s) {
    // An expert server answers health NOT_SERVING while it loads; only a
    // SERVING one knows its placement.
    if (absl::Status serving = WaitForServing(
            addresses[s], absl::ToDoubleSeconds(deadline - absl::Now()));
        !serving.ok()) {
      return absl::UnavailableError(
          absl::StrCat("router: expert server ", s, " (", addresses[s],
                       ") is not serving: ", serving.message()));
    }
    auto stub = v1::ExpertService::NewStub(MakeChannel(addresses[s]));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(
        std::max(deadline, absl::Now() + absl::Seconds(1))));
    v1::Placement placement;
    grpc::Status status =
        stub->GetPlacement(&context, v1::GetPlacementRequest(), &placement);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "router: expert server ", s, " (", addresses[s],
          ") did not report its placement: ", status.error_message()));
    }
    for (const v1::ExpertId& id : placement.experts()) {
      RETURN_IF_ERROR(table.Add(id.layer(), id.expert(), static_cast<int>(s)));
    }
  }
  return table;
}

namespace {

// Joins the NCCL data plane of every expert server at once (each join
// waits for its server) and attaches the links; the first failure, naming
// its server, otherwise.
absl::Status JoinDataPlanes(
    const RouterServerOptions& options, int64_t hidden,
    const std::vector<std::unique_ptr<ExpertConnection>>& connections,
    RouterMetrics* metrics) {
  if (absl::Status usable = CheckNcclUsable(options.device); !usable.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("--data_plane=nccl: ", usable.message()));
  }
  std::vector<absl::StatusOr<std::unique_ptr<NcclExpertLink>>> links;
  for (size_t s = 0; s < connections.size(); ++s) {
    links.emplace_back(absl::UnknownError("not joined"));
  }
  std::vector<std::thread> joins;
  for (size_t s = 0; s < connections.size(); ++s) {
    joins.emplace_back([&, s] {
      links[s] = NcclExpertLink::Join(
          connections[s]->stub(),
          absl::StrCat("expert server ", s, " (", connections[s]->address(),
                       ")"),
          options.device, hidden, options.connect_timeout_seconds);
    });
  }
  for (std::thread& join : joins) join.join();
  for (const auto& link : links) {
    if (!link.ok()) {
      return absl::Status(
          link.status().code(),
          absl::StrCat("--data_plane=nccl: ", link.status().message()));
    }
  }
  for (size_t s = 0; s < connections.size(); ++s) {
    const int server = static_cast<int>(s);
    connections[s]->AttachDataPlane(*std::move(links[s]),
                                    [metrics, server](const absl::Status&) {
                                      metrics->RecordDataPlaneFallback(server);
                                    });
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RouterServer>> RouterServer::Start(
    const RouterServerOptions& options) {
  std::unique_ptr<RouterServer> server(new RouterServer());
  ASSIGN_OR_RETURN(PlacementTable placement,
                   DiscoverPlacement(options.expert_addresses,
                                     options.connect_timeout_seconds));
  ASSIGN_OR_RETURN(server->engine_,
                   RouterEngine::Load(options.engine, std::move(placement)));
  if (options.rebalance.num_nodes > 1) {
    // Nodes are checked at start (slot room at each rebalance).
    HierarchicalEplbOptions by_node;
    by_node.servers.num_servers =
        static_cast<int>(options.expert_addresses.size());
    by_node.servers.slots_per_server = server->engine_->config().num_experts;
    by_node.num_nodes = options.rebalance.num_nodes;
    by_node.num_expert_groups = ExpertGroups(server->engine_->config());
    if (absl::Status ok = CheckHierarchical(
            server->engine_->config().num_experts, by_node);
        !ok.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--expert_server_nodes=", options.rebalance.num_nodes,
          ": hierarchical placement is impossible: ", ok.message(),
          " (without group-limited gating, leave it at 1)"));
    }
  }
  std::vector<std::unique_ptr<ExpertConnection>> connections;
  for (const std::string& address : options.expert_addresses) {
    connections.push_back(
        std::make_unique<ExpertConnection>(address, options.shared_memory));
  }
  server->registry_ = options.registry != nullptr
                          ? options.registry
                          : std::make_shared<prometheus::Registry>();
  server->metrics_ = std::make_unique<RouterMetrics>(
      *server->registry_, server->engine_->config(),
      *server->engine_->placement(), options.expert_addresses,
      options.metrics_per_expert);
  if (options.data_plane == DataPlane::kNccl) {
    RETURN_IF_ERROR(JoinDataPlanes(options,
                                   server->engine_->config().hidden_size,
                                   connections, server->metrics_.get()));
  } else {
    AttachSharedMemoryAtStart(connections, "router",
                              absl::Seconds(options.connect_timeout_seconds));
  }
  server->dispatcher_ = std::make_unique<MoeDispatcher>(
      server->engine_.get(), std::move(connections),
      options.fanout_timeout_seconds, options.health_probe_seconds,
      server->metrics_.get());
  server->followers_ = std::make_unique<PlacementFollowers>();
  server->rebalancer_ = std::make_unique<Rebalancer>(
      server->engine_.get(), options.expert_addresses, options.rebalance,
      server->followers_.get(), server->metrics_.get());
  // A server the prober finds SERVING takes work once it hosts what the
  // placement gives it (a restarted one gets its experts back).
  server->dispatcher_->SetAdmission(
      [rebalancer = server->rebalancer_.get()](int s, bool up) {
        return rebalancer->Admit(s, up);
      });
  server->service_ = std::make_unique<RouterServiceImpl>(
      server->dispatcher_.get(), server->rebalancer_.get(),
      server->followers_.get());

  ASSIGN_OR_RETURN(StartedServer started,
                   StartGrpcServer("router", options.listen_address,
                                   {server->service_.get()}));
  server->server_ = std::move(started.server);
  server->port_ = started.port;
  return server;
}

RouterServer::~RouterServer() {
  Shutdown(0);
  Wait();
  // The prober (the dispatcher's) outlives the rebalancer it calls.
  if (dispatcher_ != nullptr) dispatcher_->SetAdmission(nullptr);
}

void RouterServer::Shutdown(double grace_seconds) {
  if (server_ == nullptr) return;
  // Held placement polls end now, or the drain would wait for them.
  followers_->Stop();
  DrainGrpcServer(*server_, grace_seconds);
}

void RouterServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moe
