#include "core/metrics/metrics_endpoint.h"

#include <exception>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moe::metrics {
namespace {

// The host part of "HOST:PORT" or "[V6]:PORT" (brackets kept, as civetweb
// wants them).
std::string ListenHost(const std::string& listen_address) {
  const size_t colon = listen_address.rfind(':');
  if (colon == std::string::npos) return listen_address;
  return listen_address.substr(0, colon);
}

}  // namespace

absl::StatusOr<MetricsEndpoint> StartMetricsEndpoint(
    const std::string& what, const std::string& listen_address, int port,
    std::shared_ptr<prometheus::Registry> registry) {
  MetricsEndpoint endpoint;
  if (port == -1) return endpoint;
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": --metrics_port must be -1 (off), 0 (any free port) or a port "
              "1..65535, not ",
        port));
  }
  std::string host = ListenHost(listen_address);
  if (host.empty()) host = "0.0.0.0";
  const std::string bind = absl::StrCat(host, ":", port);
  try {
    // One worker thread: scrapes are rare and small.
    endpoint.exposer = std::make_unique<prometheus::Exposer>(bind, 1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat(what, ": cannot serve metrics on ", bind, " (", e.what(),
                     "; address in use, or not a valid host)"));
  }
  endpoint.exposer->RegisterCollectable(registry);
  const std::vector<int> ports = endpoint.exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat(what, ": metrics listener on ", bind, " has no port"));
  }
  endpoint.port = ports.front();
  endpoint.url = absl::StrCat("http://", host, ":", endpoint.port, "/metrics");
  return endpoint;
}

}  // namespace moe::metrics
