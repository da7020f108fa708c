#include "router/eplb_hierarchical.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace moe {

absl::Status CheckHierarchical(int experts,
                               const HierarchicalEplbOptions& options) {
  const int nodes = options.num_nodes;
  const int groups = options.num_expert_groups;
  const int servers = options.servers.num_servers;
  if (nodes < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("hierarchical placement needs at least 2 nodes, got ",
                     nodes));
  }
  if (servers < nodes || servers % nodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", servers, " expert servers do not split evenly into ", nodes,
        " nodes"));
  }
  if (groups < 1 || experts % groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", experts, " experts do not split evenly into ", groups,
        " expert groups"));
  }
  if (groups % nodes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the model's ", groups, " expert groups (n_group) do not split "
        "evenly over ", nodes, " nodes"));
  }
  const int64_t node_slots =
      int64_t{servers / nodes} * options.servers.slots_per_server;
  const int node_experts = experts / nodes;
  if (node_slots < node_experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a node's ", servers / nodes, " servers x ",
        options.servers.slots_per_server, " slots cannot hold its ",
        node_experts, " experts"));
  }
  return absl::OkStatus();
}

int ExpertGroups(const ModelConfig& config) {
  return config.topk_method == TopkMethod::kGreedy ? 1 : config.n_group;
}

int NodeOfServer(int server, const HierarchicalEplbOptions& options) {
  return server / (options.servers.num_servers / options.num_nodes);
}

absl::StatusOr<LayerPlacementPlan> PlanHierarchicalLayerPlacement(
    absl::Span<const double> load, const HierarchicalEplbOptions& options) {
  const int experts = static_cast<int>(load.size());
  if (absl::Status ok = CheckHierarchical(experts, options); !ok.ok()) {
    return ok;
  }
  for (int e = 0; e < experts; ++e) {
    if (!(load[e] >= 0) || !std::isfinite(load[e])) {
      return absl::InvalidArgumentError(
          absl::StrCat("load of expert ", e, " must be finite and >= 0, got ",
                       load[e]));
    }
  }
  const int nodes = options.num_nodes;
  const int groups = options.num_expert_groups;
  const int group_size = experts / groups;
  const int groups_per_node = groups / nodes;
  const int servers_per_node = options.servers.num_servers / nodes;

  // 1. Groups to nodes, heaviest first onto the least-loaded node with room.
  std::vector<double> group_load(groups, 0.0);
  for (int e = 0; e < experts; ++e) group_load[e / group_size] += load[e];
  std::vector<int> order(groups);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return group_load[a] > group_load[b];
  });
  std::vector<double> node_load(nodes, 0.0);
  std::vector<std::vector<int>> node_groups(nodes);
  for (int g : order) {
    int pick = -1;
    for (int n = 0; n < nodes; ++n) {
      if (static_cast<int>(node_groups[n].size()) >= groups_per_node) continue;
      if (pick < 0 || node_load[n] < node_load[pick]) pick = n;
    }
    node_groups[pick].push_back(g);
    node_load[pick] += group_load[g];
  }

  // 2. Within each node, the flat plan over its servers.
  std::vector<std::vector<int>> hosts(experts);
  EplbOptions within;
  within.num_servers = servers_per_node;
  within.slots_per_server = options.servers.slots_per_server;
  for (int n = 0; n < nodes; ++n) {
    std::sort(node_groups[n].begin(), node_groups[n].end());
    std::vector<int> node_experts;  // local index -> global expert id
    for (int g : node_groups[n]) {
      for (int i = 0; i < group_size; ++i) {
        node_experts.push_back(g * group_size + i);
      }
    }
    std::vector<double> node_expert_load;
    for (int e : node_experts) node_expert_load.push_back(load[e]);
    absl::StatusOr<LayerPlacementPlan> local =
        PlanLayerPlacement(node_expert_load, within);
    if (!local.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("node ", n, ": ", local.status().message()));
    }
    for (size_t i = 0; i < node_experts.size(); ++i) {
      for (int s : local->servers[i]) {
        hosts[node_experts[i]].push_back(n * servers_per_node + s);
      }
    }
  }
  return EvaluatePlacement(load, hosts, options.servers.num_servers);
}

}  // namespace moe
