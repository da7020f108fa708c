#include "router/router_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/rpc/grpc_status.h"
#include "core/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/channel_arguments.h"

namespace moe {
namespace {

constexpr int kMaxMessageBytes = 512 << 20;

std::shared_ptr<grpc::Channel> ExpertChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

}  // namespace

absl::StatusOr<PlacementTable> DiscoverPlacement(
    const std::vector<std::string>& addresses, double timeout_seconds) {
  if (addresses.empty()) {
    return absl::InvalidArgumentError("router: no expert servers given");
  }
  PlacementTable table(static_cast<int>(addresses.size()));
  for (size_t s = 0; s < addresses.size(); ++s) {
    auto stub = v1::ExpertService::NewStub(ExpertChannel(addresses[s]));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(
                             static_cast<int64_t>(timeout_seconds * 1000)));
    context.set_wait_for_ready(true);  // the server may still be loading
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

absl::StatusOr<std::unique_ptr<RouterServer>> RouterServer::Start(
    const RouterServerOptions& options) {
  std::unique_ptr<RouterServer> server(new RouterServer());
  ASSIGN_OR_RETURN(PlacementTable placement,
                   DiscoverPlacement(options.expert_addresses,
                                     options.connect_timeout_seconds));
  ASSIGN_OR_RETURN(server->engine_,
                   RouterEngine::Load(options.engine, std::move(placement)));
  std::vector<std::unique_ptr<v1::ExpertService::Stub>> stubs;
  for (const std::string& address : options.expert_addresses) {
    stubs.push_back(v1::ExpertService::NewStub(ExpertChannel(address)));
  }
  server->service_ = std::make_unique<RouterServiceImpl>(
      server->engine_.get(), std::move(stubs), options.expert_addresses,
      options.fanout_timeout_seconds);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address,
                           grpc::InsecureServerCredentials(), &server->port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("router: cannot listen on ", options.listen_address));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  return server;
}

RouterServer::~RouterServer() {
  Shutdown(0);
  Wait();
}

void RouterServer::Shutdown(double grace_seconds) {
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(grace_seconds * 1000)));
}

void RouterServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moe
