// Health while a server starts: a placeholder gRPC server on the server's
// port that answers grpc.health.v1 (and reflection) with NOT_SERVING while
// the process loads weights or waits for its peers, so that probes and
// launchers see "not ready" instead of "connection refused".
//
// Usage, in a server's main:
//   auto startup = StartupHealthServer::Start("router", listen, port_file);
//   options.listen_address = (*startup)->bound_address();  // same port
//   auto server = RouterServer::Start(options);  // loads, then binds
//   (*startup)->Stop();
// The real server binds the same port while the placeholder still holds it
// (gRPC servers set SO_REUSEPORT), so the port is never closed in between;
// a connection that lands on the placeholder in that instant is closed by
// Stop() and the client's channel reconnects to the real server.
#ifndef MOE_CORE_RPC_STARTUP_HEALTH_H_
#define MOE_CORE_RPC_STARTUP_HEALTH_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"

namespace moe {

class StartupHealthServer {
 public:
  // Binds `listen_address` (port 0 picks one), serves NOT_SERVING, prints
  // "<what>: starting, health NOT_SERVING on ADDR" and writes `port_file`
  // (when not empty) so a launcher can poll health during the load.
  static absl::StatusOr<std::unique_ptr<StartupHealthServer>> Start(
      const std::string& what, const std::string& listen_address,
      const std::string& port_file);
  ~StartupHealthServer();

  int port() const { return port_; }
  // `listen_address` with the bound port: where the real server must bind.
  const std::string& bound_address() const { return bound_address_; }

  // Closes the placeholder at once. Idempotent.
  void Stop();

 private:
  StartupHealthServer() = default;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string bound_address_;
};

}  // namespace moe

#endif  // MOE_CORE_RPC_STARTUP_HEALTH_H_
