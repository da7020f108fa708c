// Routed experts computed in process: gating, grouping tokens by expert, the
// grouped FFN, and the weighted combine.
#ifndef MOE_CORE_LOCAL_MOE_EXECUTOR_H_
#define MOE_CORE_LOCAL_MOE_EXECUTOR_H_

#include <functional>
#include <vector>

#include "core/expert_ffn.h"
#include "core/gating.h"
#include "core/model_weights.h"
#include "core/moe_executor.h"
#include "core/thread_pool.h"

namespace moe {

// Builds, for each expert used by `routing`, the list of (token, slot) it
// serves, in token order. Shared by the engine and the router.
struct ExpertAssignment {
  int32_t expert;
  std::vector<int32_t> tokens;  // token indices
  std::vector<float> weights;   // routing weight per token
};
std::vector<ExpertAssignment> GroupByExpert(const Routing& routing);

class LocalMoeExecutor : public MoeExecutor {
 public:
  using RoutingObserver = std::function<void(int layer, const Routing&)>;

  // `weights` must hold the gates and every expert; borrowed.
  LocalMoeExecutor(const ModelWeights* weights, ThreadPool* pool);

  absl::Status RunMoe(int layer, const float* x, int64_t tokens,
                      float* out) override;

  void SetRoutingObserver(RoutingObserver observer) {
    observer_ = std::move(observer);
  }

 private:
  const ModelWeights* weights_;
  ThreadPool* pool_;
  GroupedFfnRunner runner_;
  RoutingObserver observer_;
  std::vector<float> gathered_, results_;
};

}  // namespace moe

#endif  // MOE_CORE_LOCAL_MOE_EXECUTOR_H_
