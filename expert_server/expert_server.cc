#include "expert_server/expert_server.h"

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace moe {

// Large enough for a prefill batch of hidden states; bounded so that one
// message cannot exhaust memory.
constexpr int kMaxMessageBytes = 512 << 20;

absl::StatusOr<std::set<std::pair<int, int>>> ParseExpertList(
    absl::string_view text, bool* all) {
  *all = false;
  std::set<std::pair<int, int>> out;
  text = absl::StripAsciiWhitespace(text);
  if (text == "all") {
    *all = true;
    return out;
  }
  for (absl::string_view entry : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(entry, absl::MaxSplits(':', 1));
    int layer, expert;
    if (!absl::SimpleAtoi(parts.first, &layer) ||
        !absl::SimpleAtoi(parts.second, &expert) || layer < 0 || expert < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "experts: entry \"", entry,
          "\" is not LAYER:EXPERT with non-negative integers"));
    }
    out.emplace(layer, expert);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        "experts: empty list (give LAYER:EXPERT,... or \"all\")");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ExpertServer>> ExpertServer::Start(
    const ExpertServerOptions& options) {
  std::unique_ptr<ExpertServer> server(new ExpertServer());
  ASSIGN_OR_RETURN(server->engine_, ExpertEngine::Load(options.engine));
  server->service_ = std::make_unique<ExpertServiceImpl>(server->engine_.get());

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
        absl::StrCat("expert server: cannot listen on ", options.listen_address));
  }
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
