// Hierarchical expert-parallel load balancing for servers that form nodes
// (DeepSeek's EPLB hierarchical policy): DeepSeek-V2/V3 gating picks a
// token's experts from at most `topk_group` of `n_group` expert groups, so
// keeping each group, with all its replicas, on one node bounds how many
// nodes a token's hidden state travels to. Pure computation, deterministic.
//
// Layout: servers [n * S / N, (n + 1) * S / N) form node n; experts
// [g * E / G, (g + 1) * E / G) form group g.
#ifndef MOE_ROUTER_EPLB_HIERARCHICAL_H_
#define MOE_ROUTER_EPLB_HIERARCHICAL_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/model_config.h"
#include "router/eplb.h"

namespace moe {

struct HierarchicalEplbOptions {
  EplbOptions servers;     // all servers, and each one's slots
  int num_nodes = 1;       // N: must divide servers.num_servers
  int num_expert_groups = 1;  // G: must divide the experts and N | G
};

// Whether `options` admits a hierarchical plan of `experts` experts: N > 1,
// N divides the servers and the groups, G divides the experts, and a
// node's slots hold its groups' experts. The error says which condition
// fails (callers fall back to the flat plan and say why).
absl::Status CheckHierarchical(int experts,
                               const HierarchicalEplbOptions& options);

// 1. Groups to nodes: G / N groups per node, heaviest group (by total load)
//    first onto the least-loaded node with room (ties -> lower id).
// 2. Within each node: PlanLayerPlacement of that node's experts on its
//    servers (replication, packing, local improvement).
// Every replica of an expert sits on its group's node. The plan's loads are
// over all servers, as EvaluatePlacement gives them.
// INVALID_ARGUMENT as CheckHierarchical, or as PlanLayerPlacement.
absl::StatusOr<LayerPlacementPlan> PlanHierarchicalLayerPlacement(
    absl::Span<const double> load, const HierarchicalEplbOptions& options);

// The expert groups a model's gating limits tokens to: n_group under
// DeepSeek's group-limited top-k methods, else 1 (no groups).
int ExpertGroups(const ModelConfig& config);

// The node of `server` under `options` (for tests and the router's reports).
int NodeOfServer(int server, const HierarchicalEplbOptions& options);

}  // namespace moe

#endif  // MOE_ROUTER_EPLB_HIERARCHICAL_H_
