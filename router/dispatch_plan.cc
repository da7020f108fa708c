#include "router/dispatch_plan.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "core/cpu/kernels.h"

namespace moe {
namespace {

absl::Status CheckInputs(const ModelConfig& config, int layer,
                         const float* logits, int64_t tokens,
                         const PlacementTable& placement,
                         const CapacityOptions& options,
                         const std::vector<int64_t>& server_load,
                         const std::vector<bool>& server_down) {
  const int e = config.num_experts;
  const int k = config.num_experts_per_tok;
  if (e < 1 || k < 1 || k > e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_experts_per_tok (", k, ") must be in [1, num_experts = ", e, "]"));
  }
  if (layer < 0 || layer >= config.num_layers || !config.IsMoeLayer(layer)) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " is not a MoE layer of the model (",
                     config.num_layers, " layers)"));
  }
  if (tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokens must be >= 0, got ", tokens));
  }
  if (tokens > 0 && logits == nullptr) {
    return absl::InvalidArgumentError("logits is null");
  }
  if (!std::isfinite(options.capacity_factor) || options.capacity_factor < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("capacity_factor must be finite and >= 0, got ",
                     options.capacity_factor));
  }
  if (options.per_server_token_cap < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("per_server_token_cap must be >= 0, got ",
                     options.per_server_token_cap));
  }
  if (!server_load.empty() &&
      server_load.size() != static_cast<size_t>(placement.num_servers())) {
    return absl::InvalidArgumentError(
        absl::StrCat("server_load has ", server_load.size(), " entries for ",
                     placement.num_servers(), " servers"));
  }
  if (!server_down.empty() &&
      server_down.size() != static_cast<size_t>(placement.num_servers())) {
    return absl::InvalidArgumentError(
        absl::StrCat("server_down has ", server_down.size(), " entries for ",
                     placement.num_servers(), " servers"));
  }
  for (size_t s = 0; s < server_load.size(); ++s) {
    if (server_load[s] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "server_load[", s, "] must be >= 0, got ", server_load[s]));
    }
  }
  for (int64_t i = 0; i < tokens * e; ++i) {
    if (!std::isfinite(logits[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("router logit of token ", i / e, ", expert ", i % e,
                       " is not finite (", logits[i], ")"));
    }
  }
  for (int x = 0; x < e; ++x) {
    if (placement.Replicas(layer, x).empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("no server hosts (layer ", layer, ", expert ", x, ")"));
    }
  }
  return absl::OkStatus();
}

// The mutable state of one planning pass.
class Planner {
 public:
  Planner(const ModelConfig& config, int layer, const float* logits,
          const PlacementTable& placement, const CapacityOptions& options,
          const std::vector<int64_t>& server_load,
          const std::vector<bool>& server_down,
          absl::Span<const float> correction_bias, uint64_t rotation,
          DispatchPlan& plan)
      : config_(config),
        rotation_(rotation),
        correction_bias_(correction_bias),
        e_(config.num_experts),
        k_(config.num_experts_per_tok),
        logits_(logits),
        options_(options),
        plan_(plan),
        replicas_(e_),
        load_(placement.num_servers(), 0),
        planned_(placement.num_servers(), 0),
        expert_slots_(e_, 0),
        rankings_(plan.tokens),
        live_(e_, false) {
    for (int x = 0; x < e_; ++x) {
      for (int32_t s : placement.Replicas(layer, x)) {
        if (server_down.empty() || !server_down[s]) replicas_[x].push_back(s);
      }
      live_[x] = !replicas_[x].empty();
    }
    if (!server_load.empty()) load_ = server_load;
  }

  void Run() {
    for (int j = 0; j < k_; ++j) {
      for (int64_t t = 0; t < plan_.tokens; ++t) PlanSlot(t, j);
    }
  }

 private:
  // The replica of `expert` that a slot would go to, or -1 when the expert
  // has no room.
  int32_t PickReplica(int32_t expert) const {
    if (plan_.capacity != kUnlimitedCapacity &&
        expert_slots_[expert] >= plan_.capacity) {
      return -1;
    }
    const int64_t cap = options_.per_server_token_cap;
    // The least-loaded replicas with room, ascending; the rotation picks
    // among them.
    int32_t tied[kMaxTiedReplicas];
    int num_tied = 0;
    int64_t best_load = 0;
    for (int32_t s : replicas_[expert]) {
      if (cap > 0 && planned_[s] >= cap) continue;
      const int64_t load = planned_[s] + load_[s];
      if (num_tied == 0 || load < best_load) {
        best_load = load;
        num_tied = 0;
      } else if (load > best_load) {
        continue;
      }
      if (num_tied < kMaxTiedReplicas) tied[num_tied++] = s;
    }
    if (num_tied == 0) return -1;
    return tied[rotation_ % static_cast<uint64_t>(num_tied)];
  }

  void Place(int64_t t, int j, int32_t expert, int32_t server, bool rerouted) {
    plan_.slots[t * k_ + j] = {expert, server, rerouted};
    ++expert_slots_[expert];
    ++planned_[server];
    ExpertDispatchStats& stats = plan_.stats.experts[expert];
    ++stats.tokens;
    if (rerouted) ++stats.rerouted_in;
  }

  // True when token t gates to `expert` or already computes on it.
  bool TokenUses(int64_t t, int32_t expert) const {
    for (int j = 0; j < k_; ++j) {
      if (plan_.routing.experts[t * k_ + j] == expert ||
          plan_.slots[t * k_ + j].expert == expert) {
        return true;
      }
    }
    return false;
  }

  void PlanSlot(int64_t t, int j) {
    const int32_t gated = plan_.routing.experts[t * k_ + j];
    if (!live_[gated]) {
      plan_.slots[t * k_ + j] = {gated, -1, false};
      if (plan_.failed_tokens.empty() || plan_.failed_tokens.back() != t) {
        // Slot-major order visits tokens ascending within each choice j;
        // duplicates across choices are removed at the end.
        plan_.failed_tokens.push_back(t);
      }
      return;
    }
    if (int32_t s = PickReplica(gated); s >= 0) {
      Place(t, j, gated, s, /*rerouted=*/false);
      return;
    }
    ExpertDispatchStats& stats = plan_.stats.experts[gated];
    ++stats.overflowed;
    if (options_.policy == CapacityOptions::OverflowPolicy::kReroute) {
      std::vector<int32_t>& ranking = rankings_[t];
      if (ranking.empty()) {
        ranking = RankExperts(config_, logits_ + t * e_, correction_bias_);
      }
      for (int32_t candidate : ranking) {
        if (TokenUses(t, candidate)) continue;
        if (int32_t s = PickReplica(candidate); s >= 0) {
          ++stats.rerouted;
          Place(t, j, candidate, s, /*rerouted=*/true);
          return;
        }
      }
    }
    ++stats.dropped;
  }

  // Ties among replicas considered (more are treated as the first ones).
  static constexpr int kMaxTiedReplicas = 64;
  const ModelConfig& config_;
  const uint64_t rotation_;
  absl::Span<const float> correction_bias_;
  const int e_;
  const int k_;
  const float* logits_;
  const CapacityOptions& options_;
  DispatchPlan& plan_;
  std::vector<std::vector<int32_t>> replicas_;  // [e], live ones per expert
  std::vector<int64_t> load_;          // [servers], before this batch
  std::vector<int64_t> planned_;       // [servers], slots in this batch
  std::vector<int64_t> expert_slots_;  // [e], slots in this batch
  std::vector<std::vector<int32_t>> rankings_;  // [tokens], filled lazily
  std::vector<bool> live_;  // [e]: the expert has a replica that is up
};

// Fills plan.servers from plan.slots: one group per (server, expert), tokens
// ascending.
void BuildGroups(int num_servers, int e, DispatchPlan& plan) {
  const int k = plan.k;
  std::vector<int64_t> sizes(static_cast<size_t>(num_servers) * e, 0);
  for (const SlotAssignment& a : plan.slots) {
    if (a.server >= 0) ++sizes[static_cast<size_t>(a.server) * e + a.expert];
  }
  std::vector<int32_t> group_index(sizes.size(), -1);
  plan.servers.assign(num_servers, {});
  for (int s = 0; s < num_servers; ++s) {
    ServerDispatch& server = plan.servers[s];
    for (int x = 0; x < e; ++x) {
      const size_t i = static_cast<size_t>(s) * e + x;
      if (sizes[i] == 0) continue;
      group_index[i] = static_cast<int32_t>(server.groups.size());
      ExpertGroup& group = server.groups.emplace_back();
      group.expert = x;
      group.tokens.reserve(sizes[i]);
      group.weights.reserve(sizes[i]);
      server.num_slots += sizes[i];
    }
  }
  for (int64_t t = 0; t < plan.tokens; ++t) {
    for (int j = 0; j < k; ++j) {
      const SlotAssignment& a = plan.slots[t * k + j];
      if (a.server < 0) continue;  // dropped or unavailable
      const size_t i = static_cast<size_t>(a.server) * e + a.expert;
      ExpertGroup& group = plan.servers[a.server].groups[group_index[i]];
      group.tokens.push_back(t);
      group.weights.push_back(plan.routing.weights[t * k + j]);
    }
  }
}

}  // namespace

int64_t ExpertCapacity(double capacity_factor, int64_t tokens, int k,
                       int num_experts) {
  if (capacity_factor == 0) return kUnlimitedCapacity;
  const double c = capacity_factor * static_cast<double>(tokens) * k /
                   static_cast<double>(num_experts);
  if (c >= static_cast<double>(tokens)) return tokens;
  return std::max<int64_t>(0, static_cast<int64_t>(std::ceil(c - 1e-9)));
}

int64_t LayerDispatchStats::overflowed() const {
  int64_t n = 0;
  for (const ExpertDispatchStats& s : experts) n += s.overflowed;
  return n;
}

int64_t LayerDispatchStats::rerouted() const {
  int64_t n = 0;
  for (const ExpertDispatchStats& s : experts) n += s.rerouted;
  return n;
}

int64_t LayerDispatchStats::dropped() const {
  int64_t n = 0;
  for (const ExpertDispatchStats& s : experts) n += s.dropped;
  return n;
}

double LayerDispatchStats::Balancedness() const {
  int64_t max = 0, sum = 0;
  for (const ExpertDispatchStats& s : experts) {
    max = std::max(max, s.tokens);
    sum += s.tokens;
  }
  if (max == 0) return 1.0;
  return static_cast<double>(sum) / static_cast<double>(experts.size()) /
         static_cast<double>(max);
}

absl::StatusOr<DispatchPlan> PlanDispatch(
    const ModelConfig& config, int layer, const float* logits, int64_t tokens,
    const PlacementTable& placement, const CapacityOptions& options,
    const std::vector<int64_t>& server_load,
    const std::vector<bool>& server_down,
    absl::Span<const float> correction_bias, uint64_t rotation) {
  if (!correction_bias.empty() &&
      static_cast<int>(correction_bias.size()) != config.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        "correction_bias has ", correction_bias.size(), " values for ",
        config.num_experts, " experts"));
  }
  absl::Status status = CheckInputs(config, layer, logits, tokens, placement,
                                    options, server_load, server_down);
  if (!status.ok()) return status;
  const int e = config.num_experts;
  const int k = config.num_experts_per_tok;

  DispatchPlan plan;
  plan.layer = layer;
  plan.tokens = tokens;
  plan.k = k;
  plan.capacity = ExpertCapacity(options.capacity_factor, tokens, k, e);
  plan.routing = RouteFromLogits(config, logits, tokens, correction_bias);
  plan.slots.assign(tokens * k, {});
  plan.stats.layer = layer;
  plan.stats.slots = tokens * k;
  plan.stats.experts.assign(e, {});

  Planner(config, layer, logits, placement, options, server_load, server_down,
          correction_bias, rotation, plan)
      .Run();
  BuildGroups(placement.num_servers(), e, plan);
  if (!plan.failed_tokens.empty()) {
    std::sort(plan.failed_tokens.begin(), plan.failed_tokens.end());
    plan.failed_tokens.erase(
        std::unique(plan.failed_tokens.begin(), plan.failed_tokens.end()),
        plan.failed_tokens.end());
    for (const SlotAssignment& a : plan.slots) {
      if (a.unavailable()) plan.unavailable_experts.push_back(a.expert);
    }
    std::sort(plan.unavailable_experts.begin(), plan.unavailable_experts.end());
    plan.unavailable_experts.erase(std::unique(plan.unavailable_experts.begin(),
                                               plan.unavailable_experts.end()),
                                   plan.unavailable_experts.end());
  }
  return plan;
}

std::string DescribeUnavailableExperts(const DispatchPlan& plan) {
  if (plan.unavailable_experts.size() == 1) {
    return absl::StrCat("expert ", plan.unavailable_experts[0], " of layer ",
                        plan.layer, " has no live replica");
  }
  return absl::StrCat("experts ", absl::StrJoin(plan.unavailable_experts, ", "),
                      " of layer ", plan.layer, " have no live replica");
}

}  // namespace moe
