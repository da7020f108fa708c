#include "router/placement_table.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

std::string Name(const LayerExpert& le) {
  return absl::StrCat("(layer ", le.layer, ", expert ", le.expert, ")");
}

}  // namespace

PlacementTable::PlacementTable(int num_servers)
    : num_servers_(std::max(num_servers, 0)) {}

absl::Status PlacementTable::Add(int layer, int expert, int server) {
  if (layer < 0 || expert < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement entry ", Name({layer, expert}),
                     ": layer and expert must be >= 0"));
  }
  if (server < 0 || server >= num_servers_) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement entry ", Name({layer, expert}), ": server ",
                     server, " outside [0, ", num_servers_, ")"));
  }
  std::vector<int32_t>& servers = replicas_[{layer, expert}];
  auto it = std::lower_bound(servers.begin(), servers.end(), server);
  if (it != servers.end() && *it == server) {
    return absl::AlreadyExistsError(absl::StrCat(
        "server ", server, " already hosts ", Name({layer, expert})));
  }
  servers.insert(it, server);
  ++num_entries_;
  return absl::OkStatus();
}

absl::Span<const int32_t> PlacementTable::Replicas(int layer,
                                                   int expert) const {
  auto it = replicas_.find({layer, expert});
  if (it == replicas_.end()) return {};
  return it->second;
}

std::vector<LayerExpert> PlacementTable::ExpertsOn(int server) const {
  std::vector<LayerExpert> out;
  for (const auto& [le, servers] : replicas_) {
    if (std::binary_search(servers.begin(), servers.end(), server)) {
      out.push_back(le);
    }
  }
  return out;
}

absl::Status PlacementTable::Validate(const ModelConfig& config) const {
  for (const auto& [le, servers] : replicas_) {
    if (le.layer >= config.num_layers || !config.IsMoeLayer(le.layer)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "placement has ", Name(le), " but layer ", le.layer,
          " is not a MoE layer of the model (", config.num_layers, " layers)"));
    }
    if (le.expert >= config.num_experts) {
      return absl::InvalidArgumentError(
          absl::StrCat("placement has ", Name(le), " but the model has ",
                       config.num_experts, " experts"));
    }
  }
  int64_t missing = 0;
  LayerExpert first;
  for (int l = 0; l < config.num_layers; ++l) {
    if (!config.IsMoeLayer(l)) continue;
    for (int x = 0; x < config.num_experts; ++x) {
      if (!Replicas(l, x).empty()) continue;
      if (missing++ == 0) first = {l, x};
    }
  }
  if (missing == 0) return absl::OkStatus();
  std::string more =
      missing > 1 ? absl::StrCat(" (and ", missing - 1, " more)") : "";
  return absl::InvalidArgumentError(
      absl::StrCat("no server hosts ", Name(first), more));
}

absl::StatusOr<PlacementTable> AutoPlacement(const ModelConfig& config,
                                             int num_servers, int replicas) {
  if (num_servers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_servers must be >= 1, got ", num_servers));
  }
  if (replicas < 1 || replicas > num_servers) {
    return absl::InvalidArgumentError(
        absl::StrCat("replicas must be in [1, num_servers = ", num_servers,
                     "], got ", replicas));
  }
  if (config.num_experts < 1) {
    return absl::InvalidArgumentError("the model has no experts to place");
  }
  PlacementTable table(num_servers);
  int64_t g = 0;
  for (int l = 0; l < config.num_layers; ++l) {
    if (!config.IsMoeLayer(l)) continue;
    for (int x = 0; x < config.num_experts; ++x, ++g) {
      for (int r = 0; r < replicas; ++r) {
        absl::Status s =
            table.Add(l, x, static_cast<int>((g * replicas + r) % num_servers));
        if (!s.ok()) return s;  // unreachable: servers are distinct
      }
    }
  }
  return table;
}

}  // namespace moe
