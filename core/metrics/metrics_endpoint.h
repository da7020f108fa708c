// Serving a registry over HTTP at /metrics with prometheus-cpp's exposer,
// on the host of a server's --listen address (loopback by default).
#ifndef MOE_CORE_METRICS_METRICS_ENDPOINT_H_
#define MOE_CORE_METRICS_METRICS_ENDPOINT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace moe::metrics {

// Deletes an exposer without the up-to-2-s wait of civetweb's stop: its
// listener thread polls with a fixed 2 s timeout and only then sees the
// stop, so while the exposer is being deleted this connects to its port
// every few milliseconds, which wakes that poll at once.
struct PromptExposerDeleter {
  std::string host;  // to connect to ("127.0.0.1" for a wildcard listen)
  int port = 0;
  void operator()(prometheus::Exposer* exposer) const;
};

struct MetricsEndpoint {
  // Null when metrics are off.
  std::unique_ptr<prometheus::Exposer, PromptExposerDeleter> exposer;
  int port = 0;                                  // the bound port
  std::string url;  // "http://HOST:PORT/metrics", empty when off
};

// Starts serving `registry` on the host of `listen_address` ("HOST:PORT" or
// "[V6]:PORT") and `port`: -1 turns metrics off (returns an endpoint with no
// exposer), 0 picks a free port, 1..65535 binds that port. UNAVAILABLE
// naming `what` and the address when it cannot bind; INVALID_ARGUMENT for a
// port out of range.
absl::StatusOr<MetricsEndpoint> StartMetricsEndpoint(
    const std::string& what, const std::string& listen_address, int port,
    std::shared_ptr<prometheus::Registry> registry);

}  // namespace moe::metrics

#endif  // MOE_CORE_METRICS_METRICS_ENDPOINT_H_
