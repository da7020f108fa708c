// Prometheus file-based service discovery for a local cluster: one JSON
// file per component (gateway.json, attention.json, router.json,
// expert.json) in the format of Prometheus' file_sd_configs, read by the
// scrape jobs of deploy/prometheus/prometheus.yml.
#ifndef MOE_TOOLS_MOE_CLUSTER_PROMETHEUS_TARGETS_H_
#define MOE_TOOLS_MOE_CLUSTER_PROMETHEUS_TARGETS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace moe::cluster {

struct MetricsTarget {
  std::string name;     // the server's name -> label `server`
  std::string binary;   // "gateway", "router", "attention_server", ...
  std::string role;     // attention servers -> label `role`
  std::string address;  // host:port of its /metrics
};

// The file a server's target goes to: "gateway", "attention", "router" or
// "expert" (".json" added).
std::string TargetFileStem(const std::string& binary);

// Writes the four files into `dir` (created if missing), each atomically
// (a temporary renamed into place, as Prometheus re-reads them on change),
// the files of components without servers holding an empty list.
// PERMISSION_DENIED naming the file that cannot be written.
absl::Status WritePrometheusTargets(const std::string& dir,
                                    const std::vector<MetricsTarget>& targets);

}  // namespace moe::cluster

#endif  // MOE_TOOLS_MOE_CLUSTER_PROMETHEUS_TARGETS_H_
