#include "tests/rebalance_util.h"

#include <random>

#include "core/local_moe_executor.h"
#include "core/rpc/tensor_codec.h"
#include "core/thread_pool.h"
#include "grpcpp/client_context.h"

namespace moe::testing {

std::set<std::pair<int, int>> PlacedOn(RouterServer& router, int s) {
  std::set<std::pair<int, int>> out;
  for (const LayerExpert& id : router.engine().placement()->ExpertsOn(s)) {
    out.emplace(id.layer, id.expert);
  }
  return out;
}

std::set<std::pair<int, int>> HostedBy(const ExpertServer& server) {
  const std::vector<std::pair<int, int>> hosted =
      server.engine().HostedExperts();
  return {hosted.begin(), hosted.end()};
}

SkewedMoeBatch::SkewedMoeBatch(const ModelWeights& weights, int tokens,
                               uint64_t seed)
    : tokens_(tokens), hidden_(weights.config.hidden_size) {
  const ModelConfig& c = weights.config;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> row(hidden_);
  for (float& v : row) v = dist(rng);
  for (int t = 0; t < tokens; ++t) x_.insert(x_.end(), row.begin(), row.end());
  ThreadPool pool(1);
  LocalMoeExecutor local(&weights, &pool);
  want_.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.IsMoeLayer(l)) continue;
    want_[l].resize(x_.size());
    ok_ = ok_ && local.RunMoe(l, x_.data(), tokens, want_[l].data()).ok();
  }
}

std::string SkewedMoeBatch::RunAndCompare(v1::RouterService::Stub& router,
                                          int layer) const {
  v1::RunMoeRequest request;
  request.set_layer(layer);
  EncodeF32(x_.data(), tokens_, hidden_, request.mutable_hidden());
  v1::RunMoeResponse response;
  grpc::ClientContext context;
  const grpc::Status status = router.RunMoe(&context, request, &response);
  if (!status.ok()) return "RunMoe failed: " + status.error_message();
  absl::StatusOr<F32Rows> got =
      DecodeF32Rows(response.output(), hidden_, "output");
  if (!got.ok()) return std::string(got.status().message());
  for (size_t i = 0; i < want_[layer].size(); ++i) {
    if (got->data[i] != want_[layer][i]) {
      return "layer " + std::to_string(layer) + " differs at " +
             std::to_string(i);
    }
  }
  return "";
}

}  // namespace moe::testing
