#include "tools/moe_cluster/server_args.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/expert_list.h"

namespace moe::cluster {
namespace {

template <typename T>
void AddIfSet(std::vector<std::string>& args, absl::string_view flag,
              const std::optional<T>& value) {
  if (!value.has_value()) return;
  if constexpr (std::is_same_v<T, double>) {
    args.push_back(absl::StrCat("--", flag, "=", FormatNumber(*value)));
  } else {
    args.push_back(absl::StrCat("--", flag, "=", *value));
  }
}

// --shared_memory when the topology sets it.
void AddSharedMemory(std::vector<std::string>& args,
                     const std::optional<bool>& shared_memory) {
  if (!shared_memory.has_value()) return;
  args.push_back(
      absl::StrCat("--shared_memory=", *shared_memory ? "true" : "false"));
}

}  // namespace

std::vector<std::string> RequiredBinaries() {
  return {kExpertServerBinary, kRouterBinary, kAttentionServerBinary,
          kGatewayBinary};
}

std::string FormatNumber(double value) {
  for (int precision = 6; precision < 17; ++precision) {
    std::string text = absl::StrFormat("%.*g", precision, value);
    if (std::strtod(text.c_str(), nullptr) == value) return text;
  }
  return absl::StrFormat("%.17g", value);
}

std::vector<ServerLaunch> PlanLaunches(const ClusterPlan& plan,
                                       const std::string& model_dir) {
  const std::string model = absl::StrCat("--model=", model_dir);
  std::vector<ServerLaunch> launches;
  for (const ExpertServerPlan& server : plan.expert_servers) {
    ServerLaunch l;
    l.name = server.name;
    l.binary = kExpertServerBinary;
    l.stage = Stage::kExpertServers;
    const std::string experts =
        server.spare ? "none" : FormatExpertList(server.experts);
    l.args = {model, absl::StrCat("--experts=", experts)};
    AddIfSet(l.args, "threads", server.threads);
    AddIfSet(l.args, "device", server.device);
    AddIfSet(l.args, "pin_cpus",
             server.pin_cpus.has_value() ? server.pin_cpus : plan.pin_cpus);
    if (plan.data_plane.kind == DataPlane::kNccl) {
      l.args.push_back("--data_plane=nccl");
    }
    AddSharedMemory(l.args, plan.shared_memory);
    l.detail = absl::StrCat("experts ", experts);
    if (server.device.has_value())
      absl::StrAppend(&l.detail, " on ", *server.device);
    launches.push_back(std::move(l));
  }
  {
    const RouterTopology& r = plan.router;
    ServerLaunch l;
    l.name = "router";
    l.binary = kRouterBinary;
    l.stage = Stage::kRouter;
    l.args = {model};
    AddIfSet(l.args, "capacity_factor", r.capacity_factor);
    AddIfSet(l.args, "overflow", r.overflow);
    AddIfSet(l.args, "per_server_token_cap", r.per_server_token_cap);
    AddIfSet(l.args, "fanout_timeout", r.fanout_timeout);
    AddIfSet(l.args, "threads", r.threads);
    AddIfSet(l.args, "rebalance_period_s", r.rebalance_period_s);
    AddIfSet(l.args, "rebalance_min_gain", r.rebalance_min_gain);
    AddIfSet(l.args, "rebalance_slots_per_server", r.rebalance_slots_per_server);
    AddIfSet(l.args, "rebalance_window_s", r.rebalance_window_s);
    AddIfSet(l.args, "expert_server_nodes", r.expert_server_nodes);
    AddSharedMemory(l.args, plan.shared_memory);
    if (plan.data_plane.kind == DataPlane::kNccl) {
      l.args.push_back("--data_plane=nccl");
      l.args.push_back(
          absl::StrCat("--device=", plan.data_plane.router_device));
      l.detail =
          absl::StrCat("NCCL data plane from ", plan.data_plane.router_device);
    }
    launches.push_back(std::move(l));
  }
  for (const AttentionServerTopology& server : plan.attention_servers) {
    ServerLaunch l;
    l.name = server.name;
    l.binary = kAttentionServerBinary;
    l.stage = Stage::kAttentionServers;
    l.role = std::string(AttentionRoleName(server.role));
    l.args = {model, absl::StrCat("--role=", l.role)};
    AddIfSet(l.args, "threads", server.threads);
    AddIfSet(l.args, "kv_cache_mb", server.kv_cache_mb);
    AddIfSet(l.args, "prefill_chunk_tokens", server.prefill_chunk_tokens);
    AddIfSet(l.args, "max_running", server.max_running);
    if (server.prefix_cache.has_value()) {
      l.args.push_back(absl::StrCat("--prefix_cache=",
                                    *server.prefix_cache ? "true" : "false"));
    }
    AddIfSet(l.args, "kv_lease_seconds", server.kv_lease_seconds);
    AddIfSet(l.args, "micro_batches", server.micro_batches);
    if (server.moe_dispatch.has_value()) {
      l.args.push_back(absl::StrCat("--moe_dispatch=", *server.moe_dispatch));
    }
    if (server.wire_dtype.has_value()) {
      l.args.push_back(absl::StrCat("--wire_dtype=", *server.wire_dtype));
    }
    AddIfSet(l.args, "pin_cpus", plan.pin_cpus);
    AddSharedMemory(l.args, plan.shared_memory);
    l.detail = absl::StrCat("role ", l.role);
    launches.push_back(std::move(l));
  }
  {
    ServerLaunch l;
    l.name = "gateway";
    l.binary = kGatewayBinary;
    l.stage = Stage::kGateway;
    l.args = {model};
    AddIfSet(l.args, "max_in_flight", plan.gateway.max_in_flight);
    AddIfSet(l.args, "drain_seconds", plan.gateway.drain_seconds);
    if (!plan.security.auth_token_file.empty()) {
      l.args.push_back(
          absl::StrCat("--auth_token_file=", plan.security.auth_token_file));
    }
    launches.push_back(std::move(l));
  }
  if (plan.security.tls()) {
    for (ServerLaunch& l : launches) {
      l.args.push_back(absl::StrCat("--tls_cert_file=", plan.security.tls_cert_file));
      l.args.push_back(absl::StrCat("--tls_key_file=", plan.security.tls_key_file));
      l.args.push_back(absl::StrCat("--tls_ca_file=", plan.security.tls_ca_file));
    }
  }
  return launches;
}

std::string DependencyFlag(Stage stage, absl::string_view role) {
  switch (stage) {
    case Stage::kExpertServers:
      return "";
    case Stage::kRouter:
      return "expert_servers";
    case Stage::kAttentionServers:
      return "router";
    case Stage::kGateway:
      if (role == "prefill") return "prefill_servers";
      if (role == "decode") return "decode_servers";
      return "attention_servers";
  }
  return "";
}

std::vector<std::string> WithDependencies(
    const ServerLaunch& launch, const std::vector<Dependency>& dependencies) {
  std::vector<std::string> args = launch.args;
  // One flag per role, in the order the roles first appear.
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;
  for (const Dependency& d : dependencies) {
    const std::string flag = DependencyFlag(launch.stage, d.role);
    if (flag.empty()) continue;
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.first == flag; });
    if (it == groups.end()) {
      groups.push_back({flag, {}});
      it = std::prev(groups.end());
    }
    it->second.push_back(d.address);
  }
  for (const auto& [flag, addresses] : groups) {
    args.push_back(absl::StrCat("--", flag, "=", absl::StrJoin(addresses, ",")));
  }
  return args;
}

}  // namespace moe::cluster
