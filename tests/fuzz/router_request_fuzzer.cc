// The router's RunMoe decoding and planning on arbitrary moe.v1.RunMoeRequest
// messages, the steps MoeDispatcher::Dispatch takes before any expert call:
// DecodeF32Rows of `hidden`, then RouterEngine::Plan of `layer`. The engine
// holds the gates of a small Qwen2-MoE model (hidden size 64, layers 0 and 2
// MoE, layer 1 dense, 8 experts, top-3) on two expert servers with replicas.
// Even call_ids use unlimited capacity, odd ones capacity factor 0.5 with
// rerouting. The plan must index only existing tokens, experts and servers;
// it is then combined from zero expert outputs and released, as the
// dispatcher does.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/rpc/tensor_codec.h"
#include "moe/v1/router.pb.h"
#include "router/router_engine.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

moe::RouterEngine* LoadEngine(double capacity_factor) {
  moe::RouterEngineOptions options;
  options.model_dir = moe::fuzz::SmallModelDir(moe::ModelFamily::kQwen2Moe);
  options.capacity.capacity_factor = capacity_factor;
  options.num_threads = 1;
  moe::PlacementTable placement(2);
  for (int layer : {0, 2}) {
    for (int e = 0; e < 8; ++e) {
      if (e < 6) moe::fuzz::CheckOk(placement.Add(layer, e, 0), "placement");
      if (e >= 3) moe::fuzz::CheckOk(placement.Add(layer, e, 1), "placement");
    }
  }
  auto loaded = moe::RouterEngine::Load(options, std::move(placement));
  moe::fuzz::CheckOk(loaded.status(), "loading the router engine");
  return loaded->release();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static moe::RouterEngine* unlimited = LoadEngine(0);
  static moe::RouterEngine* limited = LoadEngine(0.5);
  auto request = moe::fuzz::ParseProto<moe::v1::RunMoeRequest>(data, size);
  if (!request) return 0;
  moe::RouterEngine& engine = request->call_id() % 2 == 0 ? *unlimited : *limited;
  const moe::ModelConfig& config = engine.config();
  absl::StatusOr<moe::F32Rows> x =
      moe::DecodeF32Rows(request->hidden(), config.hidden_size, "hidden");
  if (!x.ok()) return 0;
  absl::StatusOr<moe::DispatchPlan> planned =
      engine.Plan(request->layer(), x->data, x->rows);
  if (!planned.ok()) {
    moe::fuzz::Check(planned.status().code() ==
                         absl::StatusCode::kInvalidArgument,
                     "a bad request is not INVALID_ARGUMENT");
    return 0;
  }
  const moe::DispatchPlan& plan = *planned;
  moe::fuzz::Check(plan.tokens == x->rows, "plan covers other tokens");
  moe::fuzz::Check(plan.servers.size() == 2, "plan has other servers");
  std::vector<std::vector<std::vector<float>>> answers(plan.servers.size());
  std::vector<std::vector<const float*>> outputs(plan.servers.size());
  for (size_t s = 0; s < plan.servers.size(); ++s) {
    for (const moe::ExpertGroup& group : plan.servers[s].groups) {
      moe::fuzz::Check(group.expert >= 0 && group.expert < config.num_experts,
                       "a group names an expert outside the model");
      moe::fuzz::Check(!group.tokens.empty() &&
                           group.tokens.size() == group.weights.size(),
                       "a group is empty or its weights do not match");
      for (size_t i = 0; i < group.tokens.size(); ++i) {
        moe::fuzz::Check(group.tokens[i] >= 0 && group.tokens[i] < plan.tokens,
                         "a group names a token outside the batch");
        moe::fuzz::Check(i == 0 || group.tokens[i - 1] < group.tokens[i],
                         "a group's tokens are not strictly ascending");
      }
      answers[s].emplace_back(group.tokens.size() * config.hidden_size, 0.0f);
    }
    for (const auto& answer : answers[s]) outputs[s].push_back(answer.data());
  }
  std::vector<float> out(static_cast<size_t>(plan.tokens) * config.hidden_size);
  engine.Combine(plan, outputs, out.data());
  engine.Release(plan);
  return 0;
}
