// The MoE step of the attention server dispatched by the attention server
// itself (--moe_dispatch=direct): the gates, the router's placement and
// capacity policy and the weighted combine run in this process, and each
// expert server gets its groups over its own ExpertService stream, one hop
// each way instead of the two of going through the router. The router stays
// the gating and placement service: the placement, capacity and overflow
// options and timeouts come from its GetDispatchConfig at start, and the
// gates from the same checkpoint, so the plan and the combine (ascending
// expert order per token) are the router's, bit for bit. After a rebalance
// the placement follows the router's (attention_server/placement_follower.h).
//
// Failure handling is the router's MoeDispatcher's (router/moe_dispatcher.h):
// a dead or hung expert server is marked down, its groups go to other live
// replicas, and tokens with no live replica come back in WaitMoe's `failed`.
// The dispatch counters (moe_router_* families) are exported on this
// server's own registry.
#ifndef MOE_ATTENTION_SERVER_DIRECT_MOE_EXECUTOR_H_
#define MOE_ATTENTION_SERVER_DIRECT_MOE_EXECUTOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/moe_executor.h"
#include "attention_server/placement_follower.h"
#include "prometheus/registry.h"
#include "router/moe_dispatcher.h"
#include "router/router_engine.h"
#include "router/router_metrics.h"

namespace moe {

struct DirectMoeOptions {
  std::string router_address;  // the placement service
  std::string model_dir;       // the gates are read from here
  double connect_timeout_seconds = 60;  // for GetDispatchConfig
  double call_timeout_seconds = 30;     // bounds each MoE step
  v1::DType wire_dtype = v1::DTYPE_F32;  // of the groups sent (tensor_codec.h)
  // Calls to expert servers on this host over shared memory
  // (router/shm_expert_link.h); the gRPC stream otherwise.
  ShmLinkOptions shared_memory;
};

// Not thread-safe: called by the engine's executor thread only.
class DirectMoeExecutor : public MoeExecutor {
 public:
  // Asks the router for its dispatch config, loads the gates and opens the
  // expert connections. Errors: UNAVAILABLE naming the router when it does
  // not answer; INVALID_ARGUMENT naming the field of a config that does not
  // fit the model (a server id out of range, an expert outside the model, an
  // expert with no server, a non-finite capacity factor, an unknown
  // overflow policy, a non-positive timeout); the checkpoint's errors for
  // the gates.
  static absl::StatusOr<std::unique_ptr<DirectMoeExecutor>> Create(
      const DirectMoeOptions& options, prometheus::Registry& registry);
  // Waits for steps still in flight (each is bounded by its timeout).
  ~DirectMoeExecutor() override;

  absl::Status RunMoe(int layer, const float* x, int64_t tokens,
                      float* out) override;
  absl::StatusOr<uint64_t> StartMoe(int layer, const float* x, int64_t tokens,
                                    float* out) override;
  absl::Status WaitMoe(uint64_t handle, MoeTokenFailures* failed) override;
  bool WaitsOnRemote() const override { return true; }

  std::shared_ptr<const PlacementTable> placement() const {
    return engine_->placement();
  }

 private:
  struct Call;
  DirectMoeExecutor() = default;

  DirectMoeOptions options_;
  int64_t hidden_size_ = 0;
  std::unique_ptr<RouterEngine> engine_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<MoeDispatcher> dispatcher_;  // uses engine_ and metrics_
  // Switches engine_ to the router's placement after each rebalance.
  std::unique_ptr<PlacementFollower> follower_;
  uint64_t next_call_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Call>> calls_;  // started, not waited
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_DIRECT_MOE_EXECUTOR_H_
