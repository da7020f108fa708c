#include "gateway/gateway_server.h"

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"
#include "core/security/process_security.h"
#include "core/status_macros.h"

namespace moe {

namespace {

// What clients call the model (OpenAI's `model`): the checkpoint folder's
// name.
std::string ModelName(const std::string& model_dir) {
  std::filesystem::path path(model_dir);
  while (path.has_parent_path() && path.filename().empty()) {
    path = path.parent_path();  // "dir/" names "dir"
  }
  return path.filename().string();
}

// Waits for each server to be SERVING and asks its role and K/V block size;
// FAILED_PRECONDITION when a server's role is not `want` (or both, where
// `both_ok`).
absl::StatusOr<std::vector<AttentionServerInfo>> Inspect(
    const std::vector<std::string>& addresses, absl::string_view want,
    bool both_ok, double timeout_seconds) {
  std::vector<AttentionServerInfo> servers;
  for (const std::string& address : addresses) {
    absl::Status serving = WaitForServing(address, timeout_seconds);
    if (!serving.ok()) {
      return absl::UnavailableError(
          absl::StrCat("gateway: attention server ", serving.message()));
    }
    auto stub = v1::AttentionService::NewStub(MakeChannel(address));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::AttentionLoad load;
    const grpc::Status status =
        stub->GetLoad(&context, v1::GetLoadRequest(), &load);
    if (!status.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "gateway: attention server ", address, ": ", status.error_message()));
    }
    if (load.role() != want && !(both_ok && load.role() == "both")) {
      return absl::FailedPreconditionError(absl::StrCat(
          "gateway: attention server ", address, " has role ", load.role(),
          "; it was given as a ", want, " server"));
    }
    servers.push_back({address, load.kv_block_size()});
  }
  return servers;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GatewayServer>> GatewayServer::Start(
    const GatewayServerOptions& options) {
  const bool colocated = !options.attention_addresses.empty();
  const bool disaggregated =
      !options.prefill_addresses.empty() || !options.decode_addresses.empty();
  if (colocated == disaggregated) {
    return absl::InvalidArgumentError(
        "gateway: give either attention servers (role both) or prefill and "
        "decode servers");
  }
  if (disaggregated &&
      (options.prefill_addresses.empty() || options.decode_addresses.empty())) {
    return absl::InvalidArgumentError(
        "gateway: disaggregated serving needs both prefill and decode servers");
  }
  if (options.max_in_flight < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gateway: max_in_flight must be >= 1, got ", options.max_in_flight));
  }
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<TextFront> text,
                   TextFront::Load(options.model_dir));
  std::unique_ptr<GatewayServer> server(new GatewayServer());
  GatewayServiceImpl::Pools pools;
  const double timeout = options.connect_timeout_seconds;
  const int margin = options.prefix_overload_margin;
  if (colocated) {
    ASSIGN_OR_RETURN(std::vector<AttentionServerInfo> both,
                     Inspect(options.attention_addresses, "both", false, timeout));
    server->colocated_ = std::make_unique<AttentionPool>(both, margin);
    pools.colocated = server->colocated_.get();
  } else {
    ASSIGN_OR_RETURN(std::vector<AttentionServerInfo> prefill,
                     Inspect(options.prefill_addresses, "prefill", true, timeout));
    ASSIGN_OR_RETURN(std::vector<AttentionServerInfo> decode,
                     Inspect(options.decode_addresses, "decode", true, timeout));
    server->prefill_ = std::make_unique<AttentionPool>(prefill, margin);
    server->decode_ = std::make_unique<AttentionPool>(decode, margin);
    pools.prefill = server->prefill_.get();
    pools.decode = server->decode_.get();
  }
  server->registry_ = options.registry != nullptr
                          ? options.registry
                          : std::make_shared<prometheus::Registry>();
  server->metrics_ = std::make_unique<GatewayMetrics>(*server->registry_);
  std::shared_ptr<const Tokenizer> tokenizer = text->tokenizer();
  server->service_ = std::make_unique<GatewayServiceImpl>(
      std::move(config), pools, options.max_in_flight, options.bearer_token,
      server->metrics_.get(), std::move(text), ModelName(options.model_dir));

  ASSIGN_OR_RETURN(StartedServer started,
                   StartGrpcServer("gateway", options.listen_address,
                                   {server->service_.get()}));
  server->server_ = std::move(started.server);
  server->port_ = started.port;
  if (options.http.has_value()) {
    OpenAiHttpOptions http = *options.http;
    http.bearer_token = options.bearer_token;
    const security::TlsConfig tls = security::GetProcessSecurity().tls;
    if (tls.has_identity()) {
      http.tls_cert_pem = tls.cert_chain;
      http.tls_key_pem = tls.private_key;
    }
    if (http.model_name.empty()) http.model_name = ModelName(options.model_dir);
    http.tokenizer = std::move(tokenizer);
    ASSIGN_OR_RETURN(server->http_,
                     OpenAiHttpServer::Start(
                         http, server->server_->InProcessChannel(
                                   grpc::ChannelArguments())));
  }
  return server;
}

GatewayServer::~GatewayServer() {
  Shutdown(0);
  Wait();
}

void GatewayServer::Shutdown(double grace_seconds) {
  if (server_ == nullptr) return;
  // New calls (HTTP ones too: they are calls on this server) are refused
  // from here; running ones, HTTP streams included, get the grace period.
  service_->StopAccepting();
  if (http_ != nullptr) http_->StartDraining();
  DrainGrpcServer(*server_, grace_seconds,
                  [this] { return service_->InFlight() == 0; });
  if (http_ != nullptr) http_->Shutdown();
}

void GatewayServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moe
