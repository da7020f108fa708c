#include "core/rpc/channel_util.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/rpc/server_util.h"
#include "core/security/bearer_token_interceptor.h"
#include "core/security/process_security.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace moe {
namespace {

std::chrono::system_clock::time_point After(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

}  // namespace

absl::Status CheckServingOn(grpc::health::v1::Health::Stub& stub,
                            const std::string& address,
                            double timeout_seconds) {
  grpc::ClientContext context;
  context.set_deadline(After(timeout_seconds));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status =
      stub.Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        address, " health check failed: ", status.error_message()));
  }
  if (response.status() !=
      grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat(
        address, " is ",
        grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
            response.status())));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  security::ProcessSecurity security = security::GetProcessSecurity();
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      security::MakeChannelCredentials(security.tls);
  if (security.bearer_token.empty()) {
    return grpc::CreateCustomChannel(address, credentials, args);
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, credentials, args,
      security::BearerTokenInterceptors(std::move(security.bearer_token)));
}

absl::Status CheckServing(const std::string& address, double timeout_seconds) {
  auto stub = grpc::health::v1::Health::NewStub(MakeChannel(address));
  return CheckServingOn(*stub, address, timeout_seconds);
}

absl::Status WaitForServing(const std::string& address,
                            double timeout_seconds) {
  auto stub = grpc::health::v1::Health::NewStub(MakeChannel(address));
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::microseconds(
                            static_cast<int64_t>(timeout_seconds * 1e6));
  absl::Status last = absl::UnavailableError("no answer yet");
  while (std::chrono::steady_clock::now() < deadline) {
    last = CheckServingOn(*stub, address, 1.0);
    if (last.ok()) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(address, " did not report SERVING within ", timeout_seconds,
                   " s; last: ", last.message()));
}

}  // namespace moe
