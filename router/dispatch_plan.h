// Dispatch planning for one MoE layer of one routed batch: which expert
// server computes which (token, slot), under the capacity limits and overflow
// policy of SPEC "Gating, capacity and overflow". Pure computation: no RPC,
// no threads, no global state; the same inputs always give the same plan.
//
// Semantics of PlanDispatch:
// * Gating is RouteFromLogits (core/gating.h), so the selected experts and
//   combine weights are exactly the single-process engine's.
// * Slots are planned slot-major: the first choices of tokens 0, 1, ...,
//   then the second choices of tokens 0, 1, ..., and so on. Every token's
//   first choice is thus served before any token's second choice competes
//   for the same capacity.
// * Capacity: each expert computes at most C slots in the batch, with
//   C = ceil(capacity_factor * tokens * k / num_experts) (unlimited when
//   capacity_factor == 0). A server computes at most per_server_token_cap
//   slots (when > 0). Loads count slots: a token sent to two experts on the
//   same server counts twice there, as it is sent twice.
// * An expert "has room" when it has computed fewer than C slots and at
//   least one of its replicas is below the per-server cap. A slot placed on
//   an expert goes to the least-loaded such replica, load = slots planned to
//   the server in this batch + server_load[server]; among tied replicas
//   (ascending server id) the one at index `rotation` mod their count, so
//   that a caller rotating it spreads one-token batches over the replicas
//   (rotation 0: the lowest id).
// * A slot whose gated expert has no room overflows. kReroute: it goes to
//   the token's best-ranked expert (RankExperts: by gate probability, or by
//   DeepSeek's group-limited choice score; ties -> lower id)
//   that has room and that the token does not already use (its own top-k
//   experts and experts its earlier slots were rerouted to); none -> dropped.
//   kDrop: dropped.
// * Servers marked down (`server_down`) take no slots. A slot whose gated
//   expert has no live replica is "unavailable": it is neither rerouted nor
//   dropped (that would silently change the model), and its token is listed
//   in failed_tokens so that the caller fails the requests owning those
//   tokens while the rest of the batch goes on. Overflow never reroutes to
//   an expert without a live replica.
// * A rerouted slot keeps the combine weight of its gated slot: the token's
//   mixture keeps the engine's weights, only the expert computing that share
//   changes. A dropped slot contributes nothing and the other slots' weights
//   are NOT renormalised, so the layer output is the engine's output minus
//   the dropped shares (the residual stream passes through unchanged).
#ifndef MOE_ROUTER_DISPATCH_PLAN_H_
#define MOE_ROUTER_DISPATCH_PLAN_H_

#include <cstdint>
#include <string>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/gating.h"
#include "core/model_config.h"
#include "router/placement_table.h"

namespace moe {

struct CapacityOptions {
  enum class OverflowPolicy { kReroute, kDrop };

  // Capacity per expert per routed batch is
  // ceil(capacity_factor * tokens * k / num_experts); 0 = unlimited.
  // Must be finite and >= 0.
  double capacity_factor = 0;
  // > 0: no server computes more than this many slots per batch. 0 = none.
  int per_server_token_cap = 0;
  OverflowPolicy policy = OverflowPolicy::kReroute;
};

inline constexpr int64_t kUnlimitedCapacity = -1;

// C for a batch, or kUnlimitedCapacity when capacity_factor == 0.
// A product within 1e-9 above an integer counts as that integer, so decimal
// factors behave as written (0.1 * 30 tokens * k 1 / 3 experts gives 1, not
// the 2 that the binary rounding of 0.1 would give). Clamped to `tokens`,
// which no expert can exceed anyway. Precondition: capacity_factor finite
// and >= 0, num_experts >= 1.
int64_t ExpertCapacity(double capacity_factor, int64_t tokens, int k,
                       int num_experts);

// Where one (token, slot) is computed.
struct SlotAssignment {
  int32_t expert = -1;  // the gated expert, or the one it was rerouted to
  int32_t server = -1;  // -1: dropped or unavailable
  bool rerouted = false;  // expert differs from the gated expert
  bool dropped() const { return expert < 0; }
  // Gated to an expert with no live replica (expert >= 0, server -1).
  bool unavailable() const { return expert >= 0 && server < 0; }
};

// Tokens one server computes with one expert, and their combine weights:
// the router adds weights[i] * expert_output[i] to the output of token
// tokens[i].
struct ExpertGroup {
  int32_t expert = 0;
  std::vector<int64_t> tokens;  // batch indices, strictly ascending
  std::vector<float> weights;   // same length as tokens
};

// Everything one server computes for the batch.
struct ServerDispatch {
  std::vector<ExpertGroup> groups;  // ascending expert id, none empty
  int64_t num_slots = 0;            // sum of the groups' sizes
};

// Per-expert counts for one batch of one layer. Overflow is charged to the
// gated expert that was full; `tokens` and `rerouted_in` to the expert that
// computes. Invariant: overflowed == rerouted + dropped.
struct ExpertDispatchStats {
  int64_t tokens = 0;       // slots computed (own + rerouted_in)
  int64_t overflowed = 0;   // slots gated here that found no room
  int64_t rerouted = 0;     // of those, computed by another expert
  int64_t dropped = 0;      // of those, computed by none
  int64_t rerouted_in = 0;  // other experts' overflow computed here
};

// Counts for one batch of one layer, to be added to Prometheus counters.
// Invariants: sum(tokens) + dropped() + unavailable slots == slots;
// rerouted() == sum of rerouted_in.
struct LayerDispatchStats {
  int layer = 0;
  int64_t slots = 0;                         // tokens * k
  std::vector<ExpertDispatchStats> experts;  // [num_experts]

  int64_t overflowed() const;
  int64_t rerouted() const;
  int64_t dropped() const;
  // mean / max of experts[i].tokens over all experts: 1 = perfectly
  // balanced, 1/num_experts = one expert takes everything. 1 for an empty
  // batch.
  double Balancedness() const;
};

struct DispatchPlan {
  int layer = 0;
  int64_t tokens = 0;
  int k = 0;
  int64_t capacity = kUnlimitedCapacity;  // C of this batch
  // Gating of the batch: experts[t * k + j], weights[t * k + j]. A slot's
  // combine weight is routing.weights of the same index, rerouted or not.
  Routing routing;
  std::vector<SlotAssignment> slots;    // [tokens * k], indexed like routing
  std::vector<ServerDispatch> servers;  // [num_servers], by server id
  LayerDispatchStats stats;
  // Tokens with an unavailable slot, ascending, and the experts that had no
  // live replica, ascending. Empty when every server is up.
  std::vector<int64_t> failed_tokens;
  std::vector<int32_t> unavailable_experts;
  // The placement the plan was made with and its version (set by
  // RouterEngine::Plan; null when PlanDispatch is called directly). A
  // failed group is resent to another replica of this placement.
  std::shared_ptr<const PlacementTable> placement;
  uint64_t placement_version = 0;
};

// Plans one MoE layer of a batch (see the file comment for the semantics).
// logits: router logits [tokens, num_experts], row-major, all finite.
// server_load: current load of each server, for replica choice; size
// placement.num_servers(), or empty for all zero. server_down: servers that
// must take no slots; size placement.num_servers(), or empty for all up.
// correction_bias: the layer's e_score_correction_bias for noaux_tc models
// (num_experts values), empty otherwise; it changes which experts are
// chosen and how overflow ranks them, never the weights.
// Errors: INVALID_ARGUMENT for a layer that is not a MoE layer, bad sizes,
// non-finite logits (naming token and expert) or options out of range;
// FAILED_PRECONDITION naming the (layer, expert) when an expert of the layer
// has no replica.
absl::StatusOr<DispatchPlan> PlanDispatch(
    const ModelConfig& config, int layer, const float* logits, int64_t tokens,
    const PlacementTable& placement, const CapacityOptions& options,
    const std::vector<int64_t>& server_load,
    const std::vector<bool>& server_down = {},
    absl::Span<const float> correction_bias = {}, uint64_t rotation = 0);

// "expert 3 of layer 1 has no live replica" (several experts: "experts 3, 5
// of layer 1 have no live replica"), for the error of failed tokens.
std::string DescribeUnavailableExperts(const DispatchPlan& plan);

}  // namespace moe

#endif  // MOE_ROUTER_DISPATCH_PLAN_H_
