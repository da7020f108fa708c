// Which experts an expert server hosts under automatic placement, for
// deployments where every expert server runs the same command and only its
// index differs (a Kubernetes StatefulSet, whose pods are named NAME-0,
// NAME-1, ...).
#ifndef MOE_EXPERT_SERVER_AUTO_PLACEMENT_H_
#define MOE_EXPERT_SERVER_AUTO_PLACEMENT_H_

#include <set>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/model_config.h"

namespace moe {

// The (layer, expert) pairs that server `index` hosts when every expert of
// `config` is placed on `replicas` of `num_servers` servers by
// moe::AutoPlacement (the rule the launcher and the router's placement use).
// INVALID_ARGUMENT naming the flag for an index outside 0..num_servers-1 or
// an impossible count.
absl::StatusOr<std::set<std::pair<int, int>>> AutoPlacedExperts(
    const ModelConfig& config, int num_servers, int replicas, int index);

// The ordinal N at the end of a StatefulSet pod's host name "NAME-N".
// INVALID_ARGUMENT naming the host name when it has no such suffix.
absl::StatusOr<int> OrdinalFromHostname(absl::string_view hostname);

}  // namespace moe

#endif  // MOE_EXPERT_SERVER_AUTO_PLACEMENT_H_
