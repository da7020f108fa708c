#include "router/dispatch_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "router/placement_followers.h"

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
  // The placement and its version, read together.
  uint64_t version = 0;
  const std::shared_ptr<const PlacementTable> placement =
      dispatcher.engine().placement(&version);
  for (int s = 0; s < dispatcher.num_servers(); ++s) {
    out.add_expert_servers(dispatcher.connection(s).address());
  }
  WritePlacement(*placement, out.mutable_placement());
  out.set_placement_version(version);
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
  ASSIGN_OR_RETURN(out.placement,
                   ReadPlacement(config.placement(), servers, "placement"));
  out.placement_version = config.placement_version();
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
