// Runs a cluster: starts the servers stage by stage, announces them, keeps
// watching them until asked to stop, and stops them in reverse order.
#ifndef MOE_TOOLS_MOE_CLUSTER_CLUSTER_LAUNCHER_H_
#define MOE_TOOLS_MOE_CLUSTER_CLUSTER_LAUNCHER_H_

#include <string>
#include <vector>

#include "tools/moe_cluster/server_args.h"

namespace moe::cluster {

struct LauncherOptions {
  std::string bin_dir;  // holds the server binaries
  std::string log_dir;  // exists; receives <name>.log and <name>.port
  // Whole start-up, from the first spawn to the gateway SERVING.
  double startup_timeout_seconds = 120;
  // Per stop stage: how long servers may drain before SIGKILL.
  double grace_seconds = 40;
  std::string gateway_listen = "127.0.0.1:0";
  // The gateway's OpenAI-compatible HTTP API on the host of gateway_listen:
  // 0 picks a free port, -1 turns it off. gateway_http_tls: it serves HTTPS
  // (the topology's security has TLS), for the announced URL.
  int gateway_http_port = 0;
  bool gateway_http_tls = false;
  // When set, Prometheus file_sd target files for every server's /metrics
  // are written here once the cluster is ready (prometheus_targets.h).
  std::string prometheus_targets_dir;
};

// Starts `launches` (from PlanLaunches) stage by stage: every server of a
// stage on --listen 127.0.0.1:0 (the gateway on options.gateway_listen) with
// --port_file <log_dir>/<name>.port and --metrics_port=0
// --metrics_port_file <log_dir>/<name>.metrics_port, then waits for its port
// file and for SERVING before starting the next stage (the gateway also gets
// --http_port and --http_port_file <log_dir>/<name>.http_port unless
// gateway_http_port is -1). Once all serve, prints one line per server to
// stdout ("NAME: ADDR (DETAIL) metrics http://HOST:PORT/metrics"; no
// "(DETAIL)" when there is none; the gateway's line ends with " openai
// http://HOST:PORT/v1" when its HTTP API is on), then
// "ready". Then watches the children (an unexpected exit is reported on
// stderr; the others keep running) until SIGINT or SIGTERM, stops them
// (gateway, attention servers, router, expert servers) and prints "stopped".
//
// Returns the exit code: 0 after a requested stop (also during start-up),
// 1 when a server failed to start (its name, exit status and log tail go to
// stderr, and what was started is stopped). Call from the main thread, after
// SignalWaiter::BlockSignals().
int RunCluster(const std::vector<ServerLaunch>& launches,
               const LauncherOptions& options);

// The last `lines` lines of the file at `path` ("" when unreadable).
std::string LogTail(const std::string& path, int lines);

}  // namespace moe::cluster

#endif  // MOE_TOOLS_MOE_CLUSTER_CLUSTER_LAUNCHER_H_
