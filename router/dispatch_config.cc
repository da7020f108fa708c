#include "router/dispatch_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace moe {
namespace {

absl::Status CheckSeconds(double seconds, const char* field) {
  if (!std::isfinite(seconds) || seconds <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be finite and > 0, got ", seconds));
  }
  return absl::OkStatus();
}

}  // namespace

v1::DispatchConfig DescribeDispatch(MoeDispatcher& dispatcher) {
  v1::DispatchConfig out;
  const std::shared_ptr<const PlacementTable> placement =
      dispatcher.engine().placement();
  for (int s = 0; s < dispatcher.num_servers(); ++s) {
    out.add_expert_servers(dispatcher.connection(s).address());
    v1::ServerPlacement* server = out.add_placement();
    server->set_server(s);
    for (const LayerExpert& id : placement->ExpertsOn(s)) {
      v1::ExpertId* expert = server->add_experts();
      expert->set_layer(id.layer);
      expert->set_expert(id.expert);
    }
  }
  const CapacityOptions& capacity = dispatcher.engine().capacity();
  out.set_capacity_factor(capacity.capacity_factor);
  out.set_per_server_token_cap(capacity.per_server_token_cap);
  out.set_overflow(capacity.policy == CapacityOptions::OverflowPolicy::kDrop
                       ? v1::OVERFLOW_POLICY_DROP
                       : v1::OVERFLOW_POLICY_REROUTE);
  out.set_fanout_timeout_seconds(dispatcher.fanout_timeout_seconds());
  out.set_health_probe_seconds(dispatcher.health_probe_seconds());
  return out;
}

absl::StatusOr<DispatchConfig> ReadDispatchConfig(
    const v1::DispatchConfig& config) {
  DispatchConfig out;
  const int servers = config.expert_servers_size();
  if (servers == 0) {
    return absl::InvalidArgumentError("expert_servers: empty");
  }
  for (int s = 0; s < servers; ++s) {
    if (config.expert_servers(s).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert_servers[", s, "]: empty address"));
    }
    out.expert_servers.push_back(config.expert_servers(s));
  }
  out.placement = PlacementTable(servers);
  std::vector<bool> seen(servers, false);
  for (int i = 0; i < config.placement_size(); ++i) {
    const v1::ServerPlacement& server = config.placement(i);
    const std::string field = absl::StrCat("placement[", i, "]");
    if (server.server() < 0 || server.server() >= servers) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".server: ", server.server(),
                       " is outside the ", servers, " expert_servers"));
    }
    if (seen[server.server()]) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".server: ", server.server(), " is listed twice"));
    }
    seen[server.server()] = true;
    for (int e = 0; e < server.experts_size(); ++e) {
      const v1::ExpertId& id = server.experts(e);
      if (absl::Status added =
              out.placement.Add(id.layer(), id.expert(), server.server());
          !added.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".experts[", e, "]: ", added.message()));
      }
    }
  }
  if (!std::isfinite(config.capacity_factor()) ||
      config.capacity_factor() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("capacity_factor: must be finite and >= 0, got ",
                     config.capacity_factor()));
  }
  out.capacity.capacity_factor = config.capacity_factor();
  if (config.per_server_token_cap() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("per_server_token_cap: must be >= 0, got ",
                     config.per_server_token_cap()));
  }
  out.capacity.per_server_token_cap = config.per_server_token_cap();
  switch (config.overflow()) {
    case v1::OVERFLOW_POLICY_REROUTE:
      out.capacity.policy = CapacityOptions::OverflowPolicy::kReroute;
      break;
    case v1::OVERFLOW_POLICY_DROP:
      out.capacity.policy = CapacityOptions::OverflowPolicy::kDrop;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("overflow: unknown policy ",
                       static_cast<int>(config.overflow()),
                       " (expected REROUTE or DROP)"));
  }
  RETURN_IF_ERROR(
      CheckSeconds(config.fanout_timeout_seconds(), "fanout_timeout_seconds"));
  RETURN_IF_ERROR(
      CheckSeconds(config.health_probe_seconds(), "health_probe_seconds"));
  out.fanout_timeout_seconds = config.fanout_timeout_seconds();
  out.health_probe_seconds = config.health_probe_seconds();
  return out;
}

}  // namespace moe
