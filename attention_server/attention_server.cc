#include "attention_server/attention_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"
#include "core/status_macros.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"

namespace moe {

absl::StatusOr<std::unique_ptr<AttentionServer>> AttentionServer::Start(
    const AttentionServerOptions& options) {
  if (options.router_address.empty()) {
    return absl::InvalidArgumentError("attention server: no router address");
  }
  std::unique_ptr<AttentionServer> server(new AttentionServer());
  ASSIGN_OR_RETURN(ModelConfig config,
                   LoadModelConfig(options.engine.model_dir));
  absl::Status router = WaitForServing(options.router_address,
                                       options.connect_timeout_seconds);
  if (!router.ok()) {
    return absl::UnavailableError(
        absl::StrCat("attention server: router: ", router.message()));
  }
  server->moe_ = std::make_unique<RemoteMoeExecutor>(
      options.router_address, config.hidden_size,
      options.router_timeout_seconds);
  ASSIGN_OR_RETURN(server->engine_,
                   AttentionEngine::Load(options.engine, server->moe_.get()));
  server->service_ =
      std::make_unique<AttentionServiceImpl>(server->engine_.get());

  grpc::ServerBuilder builder;
  ConfigureServerBuilder(options.listen_address, builder, &server->port_);
  builder.RegisterService(server->service_.get());
  ASSIGN_OR_RETURN(server->server_,
                   BuildAndStartServer(builder, server->port_,
                                       "attention server",
                                       options.listen_address));
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  return server;
}

AttentionServer::~AttentionServer() {
  Shutdown(0);
  Wait();
}

void AttentionServer::Shutdown(double grace_seconds) {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  engine_->StopAccepting();
  // Running streams finish within the grace period or are cancelled, which
  // ends their sequences and frees their KV blocks.
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(
                        static_cast<int64_t>(grace_seconds * 1000)));
}

void AttentionServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moe
