#include "expert_server/auto_placement.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "router/placement_table.h"

namespace moe {

absl::StatusOr<std::set<std::pair<int, int>>> AutoPlacedExperts(
    const ModelConfig& config, int num_servers, int replicas, int index) {
  if (index < 0 || index >= num_servers) {
    return absl::InvalidArgumentError(
        absl::StrCat("--server_index ", index, " is outside 0..",
                     num_servers - 1, " (--placement_servers ", num_servers,
                     ")"));
  }
  absl::StatusOr<PlacementTable> table =
      AutoPlacement(config, num_servers, replicas);
  if (!table.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--placement_servers/--placement_replicas: ",
                     table.status().message()));
  }
  std::set<std::pair<int, int>> experts;
  for (const LayerExpert& e : table->ExpertsOn(index)) {
    experts.insert({e.layer, e.expert});
  }
  return experts;
}

absl::StatusOr<int> OrdinalFromHostname(absl::string_view hostname) {
  const size_t dash = hostname.rfind('-');
  int ordinal = 0;
  if (dash == absl::string_view::npos || dash + 1 == hostname.size() ||
      !absl::SimpleAtoi(hostname.substr(dash + 1), &ordinal) || ordinal < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--server_index=-1 takes the index from a host name ending in "
        "\"-<ordinal>\" (a StatefulSet pod), but the host name is \"",
        hostname, "\""));
  }
  return ordinal;
}

}  // namespace moe
