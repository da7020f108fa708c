#include "expert_server/expert_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/rpc/server_util.h"
#include "core/status_macros.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"

namespace moe {

absl::StatusOr<std::unique_ptr<ExpertServer>> ExpertServer::Start(
    const ExpertServerOptions& options) {
  std::unique_ptr<ExpertServer> server(new ExpertServer());
  ASSIGN_OR_RETURN(server->engine_, ExpertEngine::Load(options.engine));
  server->service_ = std::make_unique<ExpertServiceImpl>(server->engine_.get());

  grpc::ServerBuilder builder;
  ConfigureServerBuilder(options.listen_address, builder, &server->port_);
  builder.RegisterService(server->service_.get());
  ASSIGN_OR_RETURN(server->server_,
                   BuildAndStartServer(builder, server->port_, "expert server",
                                       options.listen_address));
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  return server;
}

ExpertServer::~ExpertServer() {
  Shutdown(0);
  Wait();
}

void ExpertServer::Shutdown(double grace_seconds) {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(
                        static_cast<int64_t>(grace_seconds * 1000)));
}

void ExpertServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moe
