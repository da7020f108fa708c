// A skewed MoE workload for rebalancing tests: one random hidden state
// repeated `tokens` times, so that every token of a layer routes to the
// same experts, with the single-process engine's MoE output of every MoE
// layer as the reference.
#ifndef MOE_TESTS_SKEWED_MOE_BATCH_H_
#define MOE_TESTS_SKEWED_MOE_BATCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/model_weights.h"
#include "moe/v1/router.grpc.pb.h"

namespace moe::testing {

class SkewedMoeBatch {
 public:
  // Computes the reference outputs with a LocalMoeExecutor over `weights`
  // (borrowed for the constructor only); `ok()` says whether that worked.
  SkewedMoeBatch(const ModelWeights& weights, int tokens, uint64_t seed);

  bool ok() const { return ok_; }
  int tokens() const { return tokens_; }

  // One RunMoe of the batch on `layer` at `router`: "" when the output
  // equals the engine's bit for bit, else what went wrong.
  std::string RunAndCompare(v1::RouterService::Stub& router, int layer) const;

 private:
  int tokens_;
  int64_t hidden_;
  bool ok_ = true;
  std::vector<float> x_;
  std::vector<std::vector<float>> want_;  // [layer]; empty for dense layers
};

}  // namespace moe::testing

#endif  // MOE_TESTS_SKEWED_MOE_BATCH_H_
