// The compute side of the router: the gates of every MoE layer, the expert
// placement, capacity and overflow options, dispatch planning, the weighted
// combine and cumulative statistics. Knows nothing of gRPC.
#ifndef MOE_ROUTER_ROUTER_ENGINE_H_
#define MOE_ROUTER_ROUTER_ENGINE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/model_weights.h"
#include "core/thread_pool.h"
#include "router/dispatch_plan.h"
#include "router/placement_table.h"

namespace moe {

struct RouterEngineOptions {
  std::string model_dir;
  CapacityOptions capacity;
  int num_threads = 1;  // threads for the gate projections
};

// Cumulative counts since start.
struct RouterTotals {
  std::vector<LayerDispatchStats> layers;  // [num_layers]; dense layers stay 0
  int64_t batches = 0;
  std::vector<int64_t> server_slots;  // [num_servers]: slots sent to each
  std::vector<int64_t> server_calls;  // [num_servers]: batches sent to each
};

// Thread-safe.
class RouterEngine {
 public:
  // Loads only the gates. `placement` must cover every expert of every MoE
  // layer (FAILED_PRECONDITION naming the first missing one).
  static absl::StatusOr<std::unique_ptr<RouterEngine>> Load(
      const RouterEngineOptions& options, PlacementTable placement);

  const ModelConfig& config() const { return weights_.config; }
  // The current placement (a snapshot: a later SwitchPlacement does not
  // change it).
  // With `version`: also its version, read with it.
  std::shared_ptr<const PlacementTable> placement(
      uint64_t* version = nullptr) const;
  uint64_t placement_version() const;

  // Makes `next` the placement of every later Plan (the servers must be
  // the same: next.num_servers() == placement()->num_servers()) and
  // returns its version. PlacementTable::Validate's error naming the first
  // (layer, expert) without a replica, or INVALID_ARGUMENT for another
  // server count; the current placement stays then.
  absl::StatusOr<uint64_t> SwitchPlacement(PlacementTable next);
  // Returns once every plan made with a placement older than `version` has
  // been released (its expert calls are over).
  void AwaitPlansBefore(uint64_t version);
  const CapacityOptions& capacity() const { return capacity_; }

  // Gates x [tokens, hidden] of `layer` and plans the dispatch, choosing
  // replicas by the slots currently in flight to each server and leaving
  // out the servers marked in `server_down` (empty: all up; see
  // PlanDispatch for unavailable experts). The plan's slots are counted as
  // in flight until Release(plan).
  absl::StatusOr<DispatchPlan> Plan(int layer, const float* x, int64_t tokens,
                                    const std::vector<bool>& server_down = {});
  void Release(const DispatchPlan& plan);

  // out[t] = sum of weight * expert output over the plan's groups.
  // outputs[s][g] is the output of group g of server s, [group tokens,
  // hidden]; a null entry (a group no server could compute, whose tokens
  // the caller fails) contributes nothing. Dropped slots contribute nothing. Each token adds its experts'
  // shares in ascending expert order, as the single-process engine does.
  void Combine(const DispatchPlan& plan,
               const std::vector<std::vector<const float*>>& outputs,
               float* out) const;

  RouterTotals Totals() const;

 private:
  RouterEngine(ModelWeights weights, PlacementTable placement,
               CapacityOptions capacity, int num_threads);

  ModelWeights weights_;
  CapacityOptions capacity_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const PlacementTable> placement_ ABSL_GUARDED_BY(mu_);
  uint64_t placement_version_ ABSL_GUARDED_BY(mu_) = 1;
  // Plans not yet released, by the placement version they were made with.
  std::map<uint64_t, int64_t> plans_in_flight_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ThreadPool> pool_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> in_flight_ ABSL_GUARDED_BY(mu_);  // slots per server
  // Plans made per layer: the rotation among equally loaded replicas
  // (PlanDispatch), so that one-token batches spread over them.
  std::vector<uint64_t> layer_plans_ ABSL_GUARDED_BY(mu_);
  RouterTotals totals_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_ROUTER_ROUTER_ENGINE_H_
