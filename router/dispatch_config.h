// The router's dispatch configuration as it travels to attention servers
// that dispatch their MoE steps themselves (RouterService.GetDispatchConfig):
// built from a running dispatcher, and read back, checked, on the other side.
#ifndef MOE_ROUTER_DISPATCH_CONFIG_H_
#define MOE_ROUTER_DISPATCH_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/v1/router.pb.h"
#include "router/dispatch_plan.h"
#include "router/moe_dispatcher.h"
#include "router/placement_table.h"

namespace moe {

struct DispatchConfig {
  std::vector<std::string> expert_servers;  // server id = index
  PlacementTable placement{0};
  uint64_t placement_version = 0;  // the router's (WatchPlacement)
  CapacityOptions capacity;
  double fanout_timeout_seconds = 0;
  double health_probe_seconds = 0;
};

// What `dispatcher` uses: its servers, placement, capacity and timeouts.
v1::DispatchConfig DescribeDispatch(MoeDispatcher& dispatcher);

// INVALID_ARGUMENT naming the field: no expert servers, an empty address, a
// placement entry for a server id outside the list or listed twice, a
// negative layer or expert, a capacity factor that is not finite and >= 0,
// a negative per-server cap, an unknown overflow policy, a timeout that is
// not finite and > 0. (Whether the placement fits the model is checked
// where the gates are loaded, RouterEngine::Load.)
absl::StatusOr<DispatchConfig> ReadDispatchConfig(
    const v1::DispatchConfig& config);

}  // namespace moe

#endif  // MOE_ROUTER_DISPATCH_CONFIG_H_
