#include "tools/moe_cli/model_commands.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/rpc/channel_util.h"
#include "grpcpp/client_context.h"
#include "moe/v1/generate.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/moe_cli/cli_rpc.h"

namespace moe::cli {
namespace {

constexpr double kDefaultTimeoutSeconds = 30;

double TimeoutOrDefault(double seconds) {
  return seconds > 0 ? seconds : kDefaultTimeoutSeconds;
}

}  // namespace

int RunInfo(const std::string& gateway, double timeout_seconds, bool json) {
  auto stub = moe::v1::Inference::NewStub(MakeChannel(gateway));
  grpc::ClientContext context;
  ApplyTimeout(context, TimeoutOrDefault(timeout_seconds));
  moe::v1::ModelInfo info;
  const grpc::Status status =
      stub->GetModelInfo(&context, moe::v1::GetModelInfoRequest(), &info);
  if (!status.ok()) return ReportRpcError(status);
  const std::vector<int32_t> eos(info.eos_token_ids().begin(),
                                 info.eos_token_ids().end());
  if (json) {
    const nlohmann::json out = {
        {"architecture", info.architecture()},
        {"vocab_size", info.vocab_size()},
        {"max_context_length", info.max_context_length()},
        {"num_layers", info.num_layers()},
        {"num_experts", info.num_experts()},
        {"num_experts_per_tok", info.num_experts_per_tok()},
        {"eos_token_ids", eos}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf(
        "architecture: %s\nvocab_size: %d\nmax_context_length: %d\n"
        "num_layers: %d\nnum_experts: %d\nnum_experts_per_tok: %d\n"
        "eos_token_ids: %s\n",
        info.architecture().c_str(), info.vocab_size(),
        info.max_context_length(), info.num_layers(), info.num_experts(),
        info.num_experts_per_tok(), absl::StrJoin(eos, ",").c_str());
  }
  std::fflush(stdout);
  return 0;
}

int RunAbort(const std::string& gateway, const std::string& request_id,
             double timeout_seconds) {
  auto stub = moe::v1::Inference::NewStub(MakeChannel(gateway));
  grpc::ClientContext context;
  ApplyTimeout(context, TimeoutOrDefault(timeout_seconds));
  moe::v1::AbortRequest request;
  request.set_request_id(request_id);
  moe::v1::AbortResponse response;
  const grpc::Status status = stub->Abort(&context, request, &response);
  if (!status.ok()) return ReportRpcError(status);
  std::printf("request %s: %s\n", request_id.c_str(),
              response.found() ? "aborted" : "not running");
  std::fflush(stdout);
  return response.found() ? 0 : 1;
}

int RunRebalance(const std::string& router, bool force, double timeout_seconds,
                 bool json) {
  auto stub = moe::v1::RouterService::NewStub(MakeChannel(router));
  grpc::ClientContext context;
  // Moving weights may take long: loads from disk and drains.
  ApplyTimeout(context, timeout_seconds > 0 ? timeout_seconds : 1800);
  moe::v1::RebalanceRequest request;
  request.set_force(force);
  moe::v1::RebalanceResponse response;
  const grpc::Status status = stub->Rebalance(&context, request, &response);
  if (!status.ok()) return ReportRpcError(status);
  if (json) {
    const nlohmann::json out = {
        {"applied", response.applied()},
        {"reason", response.reason()},
        {"imbalance_before", response.imbalance_before()},
        {"imbalance_after", response.imbalance_after()},
        {"window_tokens", response.window_tokens()},
        {"loaded", response.loaded()},
        {"unloaded", response.unloaded()},
        {"seconds", response.seconds()},
        {"policy", response.policy()},
        {"window_seconds", response.window_seconds()}};
    std::printf("%s\n", out.dump().c_str());
  } else if (response.applied()) {
    std::printf(
        "rebalanced: imbalance %.3f -> %.3f (window of %lld tokens over "
        "%.1f s), %d experts loaded, %d unloaded, %.3f s, %s placement%s%s\n",
        response.imbalance_before(), response.imbalance_after(),
        static_cast<long long>(response.window_tokens()),
        response.window_seconds(), response.loaded(),
        response.unloaded(), response.seconds(), response.policy().c_str(),
        response.reason().empty() ? "" : "; ", response.reason().c_str());
  } else {
    std::printf("not rebalanced: %s\n", response.reason().c_str());
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace moe::cli
