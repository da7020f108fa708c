#include "gateway/gateway_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"
#include "core/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Start(
    const GatewayServerOptions& options) {
  if (options.attention_addresses.empty()) {
    return absl::InvalidArgumentError("gateway: no attention servers given");
  }
  if (options.max_in_flight < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gateway: max_in_flight must be >= 1, got ", options.max_in_flight));
  }
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
  for (const std::string& address : options.attention_addresses) {
    absl::Status serving =
        WaitForServing(address, options.connect_timeout_seconds);
    if (!serving.ok()) {
      return absl::UnavailableError(
          absl::StrCat("gateway: attention server ", serving.message()));
    }
  }
  std::unique_ptr<GatewayServer> server(new GatewayServer());
  server->pool_ = std::make_unique<AttentionPool>(options.attention_addresses);
  server->service_ = std::make_unique<GatewayServiceImpl>(
      std::move(config), server->pool_.get(), options.max_in_flight);

  ASSIGN_OR_RETURN(StartedServer started,
                   StartGrpcServer("gateway", options.listen_address,
                                   {server->service_.get()}));
  server->server_ = std::move(started.server);
  server->port_ = started.port;
  return server;
}

GatewayServer::~GatewayServer() {
  Shutdown(0);
  Wait();
}

void GatewayServer::Shutdown(double grace_seconds) {
  if (server_ == nullptr) return;
  service_->StopAccepting();
  DrainGrpcServer(*server_, grace_seconds);
}

void GatewayServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moe
