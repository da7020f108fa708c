#include "attention_server/attention_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"
#include "core/status_macros.h"

namespace moe {

absl::StatusOr<MoeDispatchMode> ParseMoeDispatchMode(const std::string& name) {
  if (name == "router") return MoeDispatchMode::kRouter;
  if (name == "direct") return MoeDispatchMode::kDirect;
  return absl::InvalidArgumentError(absl::StrCat(
      "moe_dispatch: expected \"router\" or \"direct\", got \"", name, "\""));
}

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
  server->registry_ = options.registry != nullptr
                          ? options.registry
                          : std::make_shared<prometheus::Registry>();
  if (options.moe_dispatch == MoeDispatchMode::kDirect) {
    DirectMoeOptions direct;
    direct.router_address = options.router_address;
    direct.model_dir = options.engine.model_dir;
    direct.connect_timeout_seconds = options.connect_timeout_seconds;
    direct.call_timeout_seconds = options.router_timeout_seconds;
    direct.wire_dtype = options.wire_dtype;
    direct.shared_memory.enabled = options.shared_memory;
    absl::StatusOr<std::unique_ptr<DirectMoeExecutor>> executor =
        DirectMoeExecutor::Create(direct, *server->registry_);
    if (!executor.ok()) {
      return absl::Status(
          executor.status().code(),
          absl::StrCat("attention server: --moe_dispatch=direct: ",
                       executor.status().message()));
    }
    server->moe_ = *std::move(executor);
  } else {
    server->moe_ = std::make_unique<RemoteMoeExecutor>(
        options.router_address, config.hidden_size,
        options.router_timeout_seconds, options.wire_dtype);
  }
  server->metrics_ = std::make_unique<AttentionMetrics>(
      *server->registry_, std::string(AttentionRoleName(options.role)));
  AttentionEngineOptions engine_options = options.engine;
  engine_options.monitor = server->metrics_.get();
  ASSIGN_OR_RETURN(server->engine_,
                   AttentionEngine::Load(engine_options, server->moe_.get()));
  server->role_ = options.role;
  server->service_ = std::make_unique<AttentionServiceImpl>(
      server->engine_.get(), options.role, server->metrics_.get());

  ASSIGN_OR_RETURN(StartedServer started,
                   StartGrpcServer("attention server", options.listen_address,
                                   {server->service_.get()}));
  server->server_ = std::move(started.server);
  server->port_ = started.port;
  return server;
}

AttentionServer::~AttentionServer() {
  Shutdown(0);
  Wait();
}

void AttentionServer::Shutdown(double grace_seconds) {
  if (server_ == nullptr) return;
  engine_->StopAccepting();
  // Running streams finish within the grace period or are cancelled, which
  // ends their sequences and frees their KV blocks.
  DrainGrpcServer(*server_, grace_seconds,
                  [this] { return engine_->Idle(); });
}

void AttentionServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moe
