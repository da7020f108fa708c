// Grouped SwiGLU expert FFNs: many (expert, tokens) groups in one call.
#ifndef MOE_CORE_EXPERT_FFN_H_
#define MOE_CORE_EXPERT_FFN_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/model_weights.h"
#include "core/thread_pool.h"

namespace moe {

// out[t, :] = down(silu(gate(x[t])) * up(x[t])) for the group's tokens.
struct FfnGroup {
  const FfnWeights* weights = nullptr;
  const float* x = nullptr;  // [tokens, hidden]
  int64_t tokens = 0;
  float* out = nullptr;      // [tokens, hidden]
};

// Runs all groups with two pool dispatches (gate+up of every group, then down
// of every group). `scratch` is reused across calls to avoid allocation.
class GroupedFfnRunner {
 public:
  void Run(absl::Span<const FfnGroup> groups, ThreadPool* pool);

 private:
  std::vector<float> gate_;
  std::vector<float> up_;
};

}  // namespace moe

#endif  // MOE_CORE_EXPERT_FFN_H_
