#include "expert_server/expert_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/rpc/server_util.h"
#include "core/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<ExpertServer>> ExpertServer::Start(
    const ExpertServerOptions& options) {
  std::unique_ptr<ExpertServer> server(new ExpertServer());
  if (options.data_plane == DataPlane::kNccl) {
    if (absl::Status usable = CheckNcclUsable(options.engine.device);
        !usable.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--data_plane=nccl: ", usable.message()));
    }
  }
  ASSIGN_OR_RETURN(server->engine_, ExpertEngine::Load(options.engine));
  server->registry_ = options.registry != nullptr
                          ? options.registry
                          : std::make_shared<prometheus::Registry>();
  server->metrics_ = std::make_unique<ExpertMetrics>(
      *server->registry_, server->engine_->HostedExperts(),
      options.metrics_per_expert);
  server->service_ = std::make_unique<ExpertServiceImpl>(
      server->engine_.get(), server->metrics_.get(), options.data_plane,
      options.engine.device);
  server->service_->ConfigureSharedMemory(
      options.shared_memory,
      absl::Microseconds(options.engine.spin_microseconds));

  ASSIGN_OR_RETURN(StartedServer started,
                   StartGrpcServer("expert server", options.listen_address,
                                   {server->service_.get()}));
  server->server_ = std::move(started.server);
  server->port_ = started.port;
  return server;
}

ExpertServer::~ExpertServer() {
  Shutdown(0);
  Wait();
}

void ExpertServer::Shutdown(double grace_seconds) {
  if (server_ == nullptr) return;
  DrainGrpcServer(*server_, grace_seconds);
}

void ExpertServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moe
