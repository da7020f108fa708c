#include "tools/moe_cli/cli_rpc.h"

#include <chrono>
#include <cstdio>

#include "absl/status/status.h"

namespace moe::cli {

std::string StatusCodeName(grpc::StatusCode code) {
  // The gRPC and absl canonical codes coincide.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

int ReportRpcError(const grpc::Status& status) {
  std::fprintf(stderr, "moe-cli: %s: %s\n",
               StatusCodeName(status.error_code()).c_str(),
               status.error_message().c_str());
  std::fflush(stderr);
  return 1;
}

void ApplyTimeout(grpc::ClientContext& context, double seconds) {
  if (!(seconds > 0)) return;
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6)));
}

}  // namespace moe::cli
