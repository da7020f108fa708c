// The metrics flags every server shares (--metrics_port, --metrics_port_file)
// and the start of its endpoint from them.
#ifndef MOE_CORE_METRICS_METRICS_FLAGS_H_
#define MOE_CORE_METRICS_METRICS_FLAGS_H_

#include <memory>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "core/metrics/metrics_endpoint.h"
#include "prometheus/registry.h"

ABSL_DECLARE_FLAG(int, metrics_port);
ABSL_DECLARE_FLAG(std::string, metrics_port_file);

namespace moe::metrics {

// Starts `registry`'s endpoint on the host of `listen_address` and
// --metrics_port, prints "<what>: metrics on URL" (or "metrics off") to
// stdout and writes the bound port to --metrics_port_file when set.
absl::StatusOr<MetricsEndpoint> StartMetricsFromFlags(
    const std::string& what, const std::string& listen_address,
    std::shared_ptr<prometheus::Registry> registry);

}  // namespace moe::metrics

#endif  // MOE_CORE_METRICS_METRICS_FLAGS_H_
