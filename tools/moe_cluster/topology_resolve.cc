// ResolveTopology: the placement of a parsed topology against a model.
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "router/placement_table.h"
#include "tools/moe_cluster/json_fields.h"
#include "tools/moe_cluster/topology.h"

namespace moe::cluster {
namespace {

// Every (layer, expert) of every MoE layer, ascending.
std::set<std::pair<int, int>> AllExperts(const ModelConfig& config) {
  std::set<std::pair<int, int>> all;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    if (!config.IsMoeLayer(layer)) continue;
    for (int e = 0; e < config.num_experts; ++e) all.emplace(layer, e);
  }
  return all;
}

absl::Status CheckEntry(const ModelConfig& config, const std::string& path,
                        const std::string& server, int layer, int expert) {
  const std::string what = absl::StrCat("server ", server, " lists (layer ",
                                        layer, ", expert ", expert, ")");
  if (layer >= config.num_layers) {
    return PathError(path, absl::StrCat(what, " but the model has ",
                                        config.num_layers, " layers"));
  }
  if (!config.IsMoeLayer(layer)) {
    return PathError(path, absl::StrCat(what, " but layer ", layer,
                                        " is a dense (non-MoE) layer"));
  }
  if (expert >= config.num_experts) {
    return PathError(
        path, absl::StrCat(what, " but the model has ", config.num_experts,
                           " experts per layer"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ClusterPlan> Resolve(const Topology& topology,
                                    const ModelConfig& config) {
  ClusterPlan plan;
  plan.name = topology.name;
  plan.router = topology.router;
  plan.attention_servers = topology.attention_servers;
  plan.gateway = topology.gateway;
  plan.security = topology.security;
  plan.data_plane = topology.data_plane;
  plan.pin_cpus = topology.pin_cpus;
  plan.shared_memory = topology.shared_memory;
  const int num_servers = static_cast<int>(topology.expert_servers.size());
  absl::StatusOr<PlacementTable> table =
      topology.automatic_placement
          ? AutoPlacement(config, num_servers, topology.replicas)
          : absl::StatusOr<PlacementTable>(PlacementTable(num_servers));
  if (!table.ok()) return PathError("expert_servers", table.status().message());
  const std::set<std::pair<int, int>> all = AllExperts(config);
  for (int s = 0; s < num_servers; ++s) {
    const ExpertServerTopology& server = topology.expert_servers[s];
    const std::string path =
        FieldPath(IndexPath("expert_servers", s), "experts");
    ExpertServerPlan out;
    out.name = server.name;
    out.threads = server.threads;
    out.device = server.device;
    out.pin_cpus = server.pin_cpus;
    if (topology.automatic_placement) {
      for (const LayerExpert& le : table->ExpertsOn(s)) {
        out.experts.emplace(le.layer, le.expert);
      }
      if (out.experts.empty()) {
        return PathError(
            "expert_servers",
            absl::StrCat(num_servers,
                         " servers but the model has "
                         "only ",
                         all.size(), " (layer, expert) pairs: server ",
                         server.name, " would host nothing"));
      }
    } else {
      out.experts = server.experts.all ? all : server.experts.experts;
      out.spare = server.experts.none;
      if (out.experts.empty() && !out.spare) {
        return PathError(path, absl::StrCat("server ", server.name,
                                            " hosts nothing: the model has "
                                            "no MoE layers"));
      }
      for (const auto& [layer, expert] : out.experts) {
        RETURN_IF_ERROR(CheckEntry(config, path, server.name, layer, expert));
        RETURN_IF_ERROR(table->Add(layer, expert, s));
      }
    }
    plan.expert_servers.push_back(std::move(out));
  }
  if (absl::Status valid = table->Validate(config); !valid.ok()) {
    return PathError("expert_servers", valid.message());
  }
  return plan;
}

}  // namespace

absl::StatusOr<ClusterPlan> ResolveTopology(const Topology& topology,
                                            const ModelConfig& config) {
  absl::StatusOr<ClusterPlan> plan = Resolve(topology, config);
  if (!plan.ok())
    return Prefixed(absl::StrCat("topology ", topology.source), plan.status());
  return plan;
}

}  // namespace moe::cluster
