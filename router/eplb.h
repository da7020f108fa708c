// Expert-parallel load balancing (EPLB) of one MoE layer: how many replicas
// each expert gets and which servers host them, given each expert's recent
// load, so that the most-loaded server's share is as small as a greedy
// balanced packing can make it. In the spirit of DeepSeek's EPLB
// (replicate the heaviest experts, then pack replicas heaviest first onto
// the least-loaded server); pure computation, deterministic.
//
// Model: expert e with load L[e] (tokens in the window) and r[e] replicas
// costs each of its servers L[e] / r[e] (the router spreads an expert's
// slots over its replicas, least-loaded first). Every server has room for
// `slots_per_server` experts of the layer; an expert's replicas sit on
// distinct servers; every expert has at least one replica.
#ifndef MOE_ROUTER_EPLB_H_
#define MOE_ROUTER_EPLB_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moe {

struct EplbOptions {
  int num_servers = 0;
  int slots_per_server = 0;  // experts of the layer one server may host
};

struct LayerPlacementPlan {
  std::vector<int> replicas;                 // [experts]
  std::vector<std::vector<int>> servers;     // [experts]: ascending ids
  std::vector<double> server_load;           // [num_servers]
  double max_load = 0;
  double mean_load = 0;
  // max / mean server load; 1 when perfectly balanced (or no load).
  double imbalance() const {
    return mean_load > 0 ? max_load / mean_load : 1.0;
  }
};

// The per-server loads of an existing placement (`servers[e]` hosting
// expert e) under the same model.
LayerPlacementPlan EvaluatePlacement(absl::Span<const double> load,
                                     const std::vector<std::vector<int>>& servers,
                                     int num_servers);

// Replication, packing, then local improvement:
// 1. Every expert gets one replica; spare slots go, one at a time, to the
//    expert with the largest per-replica load L[e] / r[e] that has fewer
//    than num_servers replicas (ties -> lower id). Each step's counts are
//    packed (2) and the best packing is kept: filling every slot is not
//    always best, as a replica also adds to its server.
// 2. Replicas, heaviest per-replica load first (ties -> lower expert id),
//    go to the least-loaded server with a free slot that does not host the
//    expert yet (ties -> lower server id).
// 3. Hill climbing: the best single move, swap or slot hand-over off the
//    most-loaded server, while one lowers the maximum.
// INVALID_ARGUMENT when a load is negative or not finite, when there are no
// experts or no servers, or when the slots cannot hold one replica of every
// expert.
absl::StatusOr<LayerPlacementPlan> PlanLayerPlacement(
    absl::Span<const double> load, const EplbOptions& options);

}  // namespace moe

#endif  // MOE_ROUTER_EPLB_H_
