// The life of a server process once its flags are parsed, shared by every
// server's main (which also share the flags --listen and --port_file, and
// the TLS flags of core/security/security_flags.h):
//   0. the process-wide security configuration from the TLS flags (before
//      any channel or server exists; a bad flag or file ends the process);
//   1. Prometheus metrics on --metrics_port (up during the load too);
//   2. health NOT_SERVING on the server's port while it loads weights or
//      waits for its peers (StartupHealthServer; the port file is written
//      here, so launchers can poll health);
//   3. the server itself on the same port, health SERVING, announced;
//   4. on SIGTERM/SIGINT: health NOT_SERVING, no new calls, calls in flight
//      given `drain_seconds` to finish, exit 0.
#ifndef MOE_CORE_SERVER_SERVER_PROCESS_H_
#define MOE_CORE_SERVER_SERVER_PROCESS_H_

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "core/metrics/metrics_flags.h"
#include "core/rpc/server_util.h"
#include "core/rpc/startup_health.h"
#include "core/security/security_flags.h"
#include "prometheus/registry.h"

ABSL_DECLARE_FLAG(std::string, listen);
ABSL_DECLARE_FLAG(std::string, port_file);

namespace moe {

// Checks the shared flags before anything starts: --listen is HOST:PORT
// with PORT in [0, 65535], and --port_file's directory exists.
// INVALID_ARGUMENT naming the flag.
absl::Status ValidateServerFlags();

template <typename Server>
struct ServerProcess {
  std::string what;  // "router", for messages
  // Internal servers require client certificates when given a CA (mutual
  // TLS); the gateway's public port does not.
  security::ServerExposure exposure = security::ServerExposure::kInternal;
  double drain_seconds = 5;
  std::shared_ptr<prometheus::Registry> registry;  // the server's metrics
  // Loads and starts the server on `bound_address` (--listen with the port
  // the startup placeholder bound).
  std::function<absl::StatusOr<std::unique_ptr<Server>>(
      const std::string& bound_address)>
      start;
  // What the announcement says after the server's name ("4 experts").
  std::function<std::string(Server&)> detail;
};

// Runs the steps above on --listen, writing --port_file; returns the process
// exit code (0 after a drain, 1 when the server could not start, 2 for a TLS
// flag, metrics or port problem).
// Messages go to stdout, errors to stderr, prefixed by `what`.
template <typename Server>
int RunServerProcess(const ServerProcess<Server>& process) {
  auto fail = [&](int code, const absl::Status& status) {
    std::fprintf(stderr, "%s: %s\n", process.what.c_str(),
                 std::string(status.message()).c_str());
    return code;
  };
  if (absl::Status s = ValidateServerFlags(); !s.ok()) return fail(2, s);
  if (absl::Status s =
          security::ConfigureServerSecurityFromFlags(process.exposure);
      !s.ok()) {
    return fail(2, s);
  }
  const std::string listen = absl::GetFlag(FLAGS_listen);
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  absl::StatusOr<metrics::MetricsEndpoint> metrics =
      metrics::StartMetricsFromFlags(process.what, listen, process.registry);
  if (!metrics.ok()) return fail(2, metrics.status());
  absl::StatusOr<std::unique_ptr<StartupHealthServer>> startup =
      StartupHealthServer::Start(process.what, listen, port_file);
  if (!startup.ok()) return fail(2, startup.status());
  const std::string bound = (*startup)->bound_address();
  absl::StatusOr<std::unique_ptr<Server>> server = process.start(bound);
  (*startup)->Stop();
  if (!server.ok()) return fail(1, server.status());
  if (absl::Status s =
          AnnounceServing(process.what, process.detail(**server), bound,
                          (*server)->port(), port_file);
      !s.ok()) {
    return fail(2, s);
  }
  return ServeUntilTerminated(process.what, **server, process.drain_seconds);
}

}  // namespace moe

#endif  // MOE_CORE_SERVER_SERVER_PROCESS_H_
