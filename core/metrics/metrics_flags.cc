#include "core/metrics/metrics_flags.h"

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "core/rpc/server_util.h"

ABSL_FLAG(int, metrics_port, 0,
          "Port of the Prometheus /metrics endpoint, on the host of --listen: "
          "0 picks a free one (printed at start), -1 turns metrics off.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, the bound metrics port is written to this file.");

namespace moe::metrics {

absl::StatusOr<MetricsEndpoint> StartMetricsFromFlags(
    const std::string& what, const std::string& listen_address,
    std::shared_ptr<prometheus::Registry> registry) {
  absl::StatusOr<MetricsEndpoint> endpoint = StartMetricsEndpoint(
      what, listen_address, absl::GetFlag(FLAGS_metrics_port),
      std::move(registry));
  if (!endpoint.ok()) return endpoint.status();
  if (endpoint->exposer == nullptr) {
    std::printf("%s: metrics off\n", what.c_str());
  } else {
    std::printf("%s: metrics on %s\n", what.c_str(), endpoint->url.c_str());
  }
  std::fflush(stdout);
  const std::string port_file = absl::GetFlag(FLAGS_metrics_port_file);
  if (!port_file.empty() && endpoint->exposer != nullptr) {
    if (absl::Status s = WritePortFile(port_file, endpoint->port); !s.ok()) {
      return s;
    }
  }
  return endpoint;
}

}  // namespace moe::metrics
