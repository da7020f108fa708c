// Helpers of the in-process rebalancing tests (rebalance_test,
// rebalance_hierarchical_test): a skewed MoE workload with its reference
// outputs, and the (layer, expert) sets a placement assigns and a server
// hosts.
#ifndef MOE_TESTS_REBALANCE_UTIL_H_
#define MOE_TESTS_REBALANCE_UTIL_H_

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/model_weights.h"
#include "expert_server/expert_server.h"
#include "moe/v1/router.grpc.pb.h"
#include "router/router_server.h"

namespace moe::testing {

// The experts the router's current placement gives server `s`.
std::set<std::pair<int, int>> PlacedOn(RouterServer& router, int s);

// The experts `server` hosts now.
std::set<std::pair<int, int>> HostedBy(const ExpertServer& server);

// A skewed MoE workload: one random hidden state repeated `tokens` times,
// so that every token of a layer routes to the same experts, with the
// single-process engine's MoE output of every MoE layer as the reference.
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

#endif  // MOE_TESTS_REBALANCE_UTIL_H_
