#include "router/router_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/cpu/kernels.h"
#include "core/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<RouterEngine>> RouterEngine::Load(
    const RouterEngineOptions& options, PlacementTable placement) {
  ASSIGN_OR_RETURN(ModelWeights weights,
                   LoadModelWeightsFromDir(options.model_dir,
                                           WeightSelection::GatesOnly(),
                                           /*populate=*/true));
  RETURN_IF_ERROR(placement.Validate(weights.config));
  return std::unique_ptr<RouterEngine>(
      new RouterEngine(std::move(weights), std::move(placement),
                       options.capacity, options.num_threads));
}

RouterEngine::RouterEngine(ModelWeights weights, PlacementTable placement,
                           CapacityOptions capacity, int num_threads)
    : weights_(std::move(weights)),
      capacity_(capacity),
      placement_(std::make_shared<const PlacementTable>(std::move(placement))),
      pool_(std::make_unique<ThreadPool>(num_threads)),
      in_flight_(placement_->num_servers(), 0) {
  totals_.layers.resize(weights_.config.num_layers);
  layer_plans_.assign(weights_.config.num_layers, 0);
  totals_.server_slots.assign(placement_->num_servers(), 0);
  totals_.server_calls.assign(placement_->num_servers(), 0);
  for (int l = 0; l < weights_.config.num_layers; ++l) {
    totals_.layers[l].layer = l;
    totals_.layers[l].experts.resize(weights_.config.num_experts);
  }
}

absl::StatusOr<DispatchPlan> RouterEngine::Plan(int layer, const float* x,
                                                int64_t tokens,
                                                const std::vector<bool>& server_down) {
  const ModelConfig& c = weights_.config;
  if (layer < 0 || layer >= c.num_layers || !c.IsMoeLayer(layer)) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer: ", layer, " is not a MoE layer of this model (",
                     c.num_layers, " layers)"));
  }
  std::vector<float> logits(tokens * c.num_experts);
  absl::MutexLock lock(&mu_);
  cpu::MatMul(x, tokens, weights_.layers[layer].router_gate, logits.data(),
              pool_.get());
  ASSIGN_OR_RETURN(DispatchPlan plan,
                   PlanDispatch(c, layer, logits.data(), tokens, *placement_,
                                capacity_, in_flight_, server_down,
                                weights_.layers[layer].router_correction_bias,
                                layer_plans_[layer]++));
  plan.placement = placement_;
  plan.placement_version = placement_version_;
  ++plans_in_flight_[placement_version_];
  for (size_t s = 0; s < plan.servers.size(); ++s) {
    in_flight_[s] += plan.servers[s].num_slots;
    totals_.server_slots[s] += plan.servers[s].num_slots;
    if (!plan.servers[s].groups.empty()) ++totals_.server_calls[s];
  }
  LayerDispatchStats& total = totals_.layers[layer];
  total.slots += plan.stats.slots;
  for (size_t e = 0; e < plan.stats.experts.size(); ++e) {
    const ExpertDispatchStats& in = plan.stats.experts[e];
    ExpertDispatchStats& acc = total.experts[e];
    acc.tokens += in.tokens;
    acc.overflowed += in.overflowed;
    acc.rerouted += in.rerouted;
    acc.dropped += in.dropped;
    acc.rerouted_in += in.rerouted_in;
  }
  ++totals_.batches;
  return plan;
}

void RouterEngine::Release(const DispatchPlan& plan) {
  absl::MutexLock lock(&mu_);
  for (size_t s = 0; s < plan.servers.size(); ++s) {
    in_flight_[s] -= plan.servers[s].num_slots;
  }
  auto it = plans_in_flight_.find(plan.placement_version);
  if (it != plans_in_flight_.end() && --it->second == 0) {
    plans_in_flight_.erase(it);
  }
}

std::shared_ptr<const PlacementTable> RouterEngine::placement(
    uint64_t* version) const {
  absl::MutexLock lock(&mu_);
  if (version != nullptr) *version = placement_version_;
  return placement_;
}

uint64_t RouterEngine::placement_version() const {
  absl::MutexLock lock(&mu_);
  return placement_version_;
}

absl::StatusOr<uint64_t> RouterEngine::SwitchPlacement(PlacementTable next) {
  RETURN_IF_ERROR(next.Validate(weights_.config));
  absl::MutexLock lock(&mu_);
  if (next.num_servers() != placement_->num_servers()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "placement: ", next.num_servers(), " servers, but the router has ",
        placement_->num_servers()));
  }
  placement_ = std::make_shared<const PlacementTable>(std::move(next));
  return ++placement_version_;
}

void RouterEngine::AwaitPlansBefore(uint64_t version) {
  absl::MutexLock lock(&mu_);
  auto drained = [this, version]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return plans_in_flight_.empty() || plans_in_flight_.begin()->first >= version;
  };
  mu_.Await(absl::Condition(&drained));
}

void RouterEngine::Combine(
    const DispatchPlan& plan,
    const std::vector<std::vector<const float*>>& outputs, float* out) const {
  const int64_t h = weights_.config.hidden_size;
  // Groups in ascending expert order, whatever server computed them: each
  // token then sums its experts in the same order as the single-process
  // engine, so results are bit-identical to it.
  struct Ref {
    int32_t expert;
    size_t server;
    size_t group;
  };
  std::vector<Ref> order;
  for (size_t s = 0; s < plan.servers.size(); ++s) {
    for (size_t g = 0; g < plan.servers[s].groups.size(); ++g) {
      order.push_back({plan.servers[s].groups[g].expert, s, g});
    }
  }
  std::sort(order.begin(), order.end(), [](const Ref& a, const Ref& b) {
    return a.expert != b.expert ? a.expert < b.expert : a.server < b.server;
  });
  std::fill(out, out + plan.tokens * h, 0.0f);
  for (const Ref& ref : order) {
    const ExpertGroup& group = plan.servers[ref.server].groups[ref.group];
    const float* y = outputs[ref.server][ref.group];
    if (y == nullptr) continue;
    for (size_t i = 0; i < group.tokens.size(); ++i) {
      float* dst = out + group.tokens[i] * h;
      const float* src = y + static_cast<int64_t>(i) * h;
      const float w = group.weights[i];
      for (int64_t j = 0; j < h; ++j) dst[j] += w * src[j];
    }
  }
}

RouterTotals RouterEngine::Totals() const {
  absl::MutexLock lock(&mu_);
  return totals_;
}

}  // namespace moe
