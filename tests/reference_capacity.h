// A plain reference of the router's capacity and overflow policy (SPEC
// "Gating, capacity and overflow"; router/dispatch_plan.h states the exact
// rules), written independently of router/dispatch_plan.cc so that the
// cluster's counts can be checked against it. It runs as the MoE step of a
// single-process Transformer, with every expert on one server (no
// replicas), and counts what it reroutes and drops per (layer, expert).
#ifndef MOE_TESTS_REFERENCE_CAPACITY_H_
#define MOE_TESTS_REFERENCE_CAPACITY_H_

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "core/model_weights.h"
#include "core/moe_executor.h"
#include "core/thread_pool.h"

namespace moe::testing {

struct ReferenceSlotCounts {
  int64_t tokens = 0;      // slots computed by the expert
  int64_t overflowed = 0;  // slots gated to it that found it full
  int64_t rerouted = 0;    // of those, computed by another expert
  int64_t dropped = 0;     // of those, computed by none
};

class ReferenceCapacityMoe : public MoeExecutor {
 public:
  // `weights` must hold the gates and every expert; `drop` selects the drop
  // policy (else reroute).
  ReferenceCapacityMoe(const ModelWeights* weights, double capacity_factor,
                       bool drop);

  absl::Status RunMoe(int layer, const float* x, int64_t tokens,
                      float* out) override;

  // Counts since construction, by (layer, expert).
  const std::map<std::pair<int, int>, ReferenceSlotCounts>& counts() const {
    return counts_;
  }

 private:
  const ModelWeights* weights_;
  double capacity_factor_;
  bool drop_;
  std::map<std::pair<int, int>, ReferenceSlotCounts> counts_;
};

}  // namespace moe::testing

#endif  // MOE_TESTS_REFERENCE_CAPACITY_H_
