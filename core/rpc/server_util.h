// What every service's server and main share: building a gRPC server with
// health and reflection on a loopback-by-default port, announcing the bound
// port, and waiting for SIGINT/SIGTERM.
#ifndef MOE_CORE_RPC_SERVER_UTIL_H_
#define MOE_CORE_RPC_SERVER_UTIL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace moe {

// Largest message any service sends or accepts: room for a prefill batch of
// hidden states, bounded so that one message cannot exhaust memory.
inline constexpr int kMaxMessageBytes = 512 << 20;

// Adds the listening port (insecure; loopback unless the address says
// otherwise), message size limits, the default grpc.health.v1 service and
// server reflection to `builder`. Call before RegisterService/BuildAndStart;
// `*port` receives the bound port once BuildAndStart succeeds.
void ConfigureServerBuilder(const std::string& listen_address,
                            grpc::ServerBuilder& builder, int* port);

// BuildAndStart with a clear error: UNAVAILABLE naming `what` and the address
// when the port cannot be bound.
absl::StatusOr<std::unique_ptr<grpc::Server>> BuildAndStartServer(
    grpc::ServerBuilder& builder, const int& port, const std::string& what,
    const std::string& listen_address);

// `listen_address` with its port replaced by the bound `port`, for logs
// ("127.0.0.1:0" + 5001 -> "127.0.0.1:5001").
std::string BoundAddress(const std::string& listen_address, int port);

// Announces a started server: prints "<what>: <detail>, listening on ADDR" to
// stdout and, when `port_file` is not empty, writes the port file.
absl::Status AnnounceServing(const std::string& what, const std::string& detail,
                             const std::string& listen_address, int port,
                             const std::string& port_file);

// Writes "PORT\n" to `path` atomically (a temporary file renamed into
// place), so that a launcher polling for the file never reads half of it.
absl::Status WritePortFile(const std::string& path, int port);

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts
// afterwards; call first thing in main, before any thread exists.
void BlockTerminationSignals();
// Waits for SIGINT or SIGTERM (blocked by BlockTerminationSignals) and
// returns its number.
int WaitForTerminationSignal();

}  // namespace moe

#endif  // MOE_CORE_RPC_SERVER_UTIL_H_
