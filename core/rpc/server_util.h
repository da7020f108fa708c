// What every service's server and main share: building a gRPC server with
// health and reflection on a loopback-by-default port, announcing the bound
// port, and waiting for SIGINT/SIGTERM.
#ifndef MOE_CORE_RPC_SERVER_UTIL_H_
#define MOE_CORE_RPC_SERVER_UTIL_H_

#include <cstdio>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace moe {

// Largest message any service sends or accepts: room for a prefill batch of
// hidden states, bounded so that one message cannot exhaust memory.
inline constexpr int kMaxMessageBytes = 512 << 20;

struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // the bound port
};

// Starts a gRPC server on `listen_address` (loopback unless the address says
// otherwise; plaintext, TLS or mutual TLS as the process-wide configuration
// says, core/security/process_security.h) with the project's message size limits, serving
// `services` (borrowed; they must outlive the server), the default
// grpc.health.v1 service (SERVING on return, or NOT_SERVING when
// `serving` is false) and server reflection. UNAVAILABLE naming `what` and
// the address when the port cannot be bound.
absl::StatusOr<StartedServer> StartGrpcServer(
    const std::string& what, const std::string& listen_address,
    std::initializer_list<grpc::Service*> services, bool serving = true);

// Drains a server: health NOT_SERVING at once; then, when `idle` is given,
// the server keeps answering (health says NOT_SERVING, and the services
// refuse new work themselves) until `idle()` is true or `grace_seconds`
// have passed; then gRPC stops taking calls and those still in flight get
// what is left of the grace period before they are cancelled. Blocks while
// waiting for `idle`; grpc::Server::Wait() blocks until the drain is over.
void DrainGrpcServer(grpc::Server& server, double grace_seconds,
                     const std::function<bool()>& idle = nullptr);

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

// First thing in a server's main: BlockTerminationSignals, and Abseil's
// Mutex deadlock detection off. Debian builds Abseil without NDEBUG, which
// leaves the detection on: every lock then updates a global lock-order graph
// under a global lock, a cost the hot paths (one lock per RPC and token)
// should not pay in production.
void PrepareServerProcess();
// Waits for SIGINT or SIGTERM (blocked by BlockTerminationSignals) and
// returns its number.
int WaitForTerminationSignal();

// The end of every server's main: waits for SIGINT/SIGTERM, then drains
// `server` (Shutdown(drain_seconds), then Wait), saying so on stdout as
// "<what>: ...". Returns the exit code, 0.
template <typename Server>
int ServeUntilTerminated(const std::string& what, Server& server,
                         double drain_seconds) {
  const int signal = WaitForTerminationSignal();
  std::printf("%s: signal %d, draining (up to %g s)\n", what.c_str(), signal,
              drain_seconds);
  std::fflush(stdout);
  server.Shutdown(drain_seconds);
  server.Wait();
  std::printf("%s: stopped\n", what.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace moe

#endif  // MOE_CORE_RPC_SERVER_UTIL_H_
