// RPC plumbing shared by moe-cli's commands: deadlines and error lines.
#ifndef MOE_TOOLS_MOE_CLI_CLI_RPC_H_
#define MOE_TOOLS_MOE_CLI_CLI_RPC_H_

#include <string>

#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace moe::cli {

// "INVALID_ARGUMENT", "UNAVAILABLE", ... (the canonical code names).
std::string StatusCodeName(grpc::StatusCode code);

// Prints "moe-cli: <CODE_NAME>: <message>" to stderr; returns exit code 1.
int ReportRpcError(const grpc::Status& status);

// Sets a deadline `seconds` from now; nothing when seconds <= 0.
void ApplyTimeout(grpc::ClientContext& context, double seconds);

}  // namespace moe::cli

#endif  // MOE_TOOLS_MOE_CLI_CLI_RPC_H_
