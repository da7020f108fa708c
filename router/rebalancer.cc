#include "router/rebalancer.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/rpc/channel_util.h"
#include "core/status_macros.h"
#include "router/eplb.h"
#include "router/eplb_hierarchical.h"

namespace moe {
namespace {

// The largest number of experts one server hosts in one layer.
int MaxExpertsPerServerLayer(const PlacementTable& placement,
                             const ModelConfig& config) {
  int most = 0;
  for (int s = 0; s < placement.num_servers(); ++s) {
    std::vector<int> per_layer(config.num_layers, 0);
    for (const LayerExpert& id : placement.ExpertsOn(s)) {
      most = std::max(most, ++per_layer[id.layer]);
    }
  }
  return most;
}

std::vector<std::vector<int64_t>> TokensByLayerExpert(
    const RouterTotals& totals, const ModelConfig& config) {
  std::vector<std::vector<int64_t>> out(
      config.num_layers, std::vector<int64_t>(config.num_experts, 0));
  for (const LayerDispatchStats& layer : totals.layers) {
    if (layer.layer < 0 || layer.layer >= config.num_layers) continue;
    for (size_t e = 0; e < layer.experts.size() && e < out[layer.layer].size();
         ++e) {
      out[layer.layer][e] = layer.experts[e].tokens;
    }
  }
  return out;
}

}  // namespace

Rebalancer::Rebalancer(RouterEngine* engine,
                       std::vector<std::string> addresses,
                       RebalanceOptions options, PlacementFollowers* followers,
                       RouterMetrics* metrics)
    : engine_(engine),
      addresses_(std::move(addresses)),
      options_(options),
      followers_(followers),
      metrics_(metrics) {
  for (const std::string& address : addresses_) {
    stubs_.push_back(v1::ExpertService::NewStub(MakeChannel(address)));
  }
  {
    absl::MutexLock lock(&mu_);
    window_start_ = TokensByLayerExpert(engine_->Totals(), engine_->config());
    window_start_time_ = Now();
  }
  if (options_.window_seconds > 0) {
    {
      absl::MutexLock lock(&window_mu_);
      window_ = std::make_unique<LoadWindow>(
          absl::Seconds(options_.window_seconds));
    }
    SampleLoad();
    sampler_ = std::thread([this] { SamplerLoop(); });
  }
  uint64_t version = 0;
  const std::shared_ptr<const PlacementTable> placement =
      engine_->placement(&version);
  metrics_->SetServerExperts(*placement);
  followers_->SetCurrent(version, *placement);
  if (options_.period_seconds > 0) {
    periodic_ = std::thread([this] { PeriodicLoop(); });
  }
}

Rebalancer::~Rebalancer() {
  stop_.Notify();
  if (periodic_.joinable()) periodic_.join();
  if (sampler_.joinable()) sampler_.join();
}

absl::Time Rebalancer::Now() const {
  return options_.clock ? options_.clock() : absl::Now();
}

void Rebalancer::SampleLoad() {
  const ModelConfig& config = engine_->config();
  std::vector<std::vector<int64_t>> counts =
      TokensByLayerExpert(engine_->Totals(), config);
  const std::vector<std::vector<int64_t>> followers =
      followers_->LastLoad(config.num_layers, config.num_experts);
  for (int l = 0; l < config.num_layers; ++l) {
    for (int e = 0; e < config.num_experts; ++e) {
      counts[l][e] += followers[l][e];
    }
  }
  absl::MutexLock lock(&window_mu_);
  if (window_ != nullptr) window_->Record(Now(), std::move(counts));
}

void Rebalancer::SamplerLoop() {
  const double every = options_.window_sample_seconds > 0
                           ? options_.window_sample_seconds
                           : std::max(0.05, options_.window_seconds / 16);
  while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(every))) {
    SampleLoad();
  }
}

void Rebalancer::PeriodicLoop() {
  while (!stop_.WaitForNotificationWithTimeout(
      absl::Seconds(options_.period_seconds))) {
    absl::StatusOr<RebalanceResult> result = Rebalance(/*force=*/false);
    if (!result.ok()) {
      std::fprintf(stderr, "router: periodic rebalance failed: %s\n",
                   std::string(result.status().message()).c_str());
    }
  }
}

absl::Status Rebalancer::Admit(int server, bool up) {
  // A rebalance holds mu_ while servers load (seconds to minutes); the
  // probe must not wait that long, and the placement is changing anyway.
  if (!mu_.TryLock()) {
    if (up) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat(
        "expert server ", server, " (", addresses_[server],
        ") waits for the rebalance in progress before it is checked"));
  }
  absl::Status admitted = AdmitLocked(server);
  mu_.Unlock();
  return admitted;
}

absl::Status Rebalancer::AdmitLocked(int server) {
  if (server < 0 || server >= static_cast<int>(stubs_.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert server ", server, " is not in the placement"));
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  v1::Placement hosted_reply;
  const grpc::Status status = stubs_[server]->GetPlacement(
      &context, v1::GetPlacementRequest(), &hosted_reply);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "expert server ", server, " (", addresses_[server],
        ") did not report what it hosts: ", status.error_message()));
  }
  std::vector<LayerExpert> hosted;
  for (const v1::ExpertId& id : hosted_reply.experts()) {
    hosted.push_back({id.layer(), id.expert()});
  }
  std::sort(hosted.begin(), hosted.end());
  const std::vector<LayerExpert> placed =
      engine_->placement()->ExpertsOn(server);
  std::vector<std::vector<LayerExpert>> to_load(stubs_.size());
  std::vector<std::vector<LayerExpert>> to_unload(stubs_.size());
  std::set_difference(placed.begin(), placed.end(), hosted.begin(),
                      hosted.end(), std::back_inserter(to_load[server]));
  std::set_difference(hosted.begin(), hosted.end(), placed.begin(),
                      placed.end(), std::back_inserter(to_unload[server]));
  if (to_load[server].empty() && to_unload[server].empty()) {
    return absl::OkStatus();
  }
  std::printf("router: expert server %d (%s) hosts %zu experts but the "
              "placement gives it %zu (restarted?): loading %zu, unloading "
              "%zu\n",
              server, addresses_[server].c_str(), hosted.size(),
              placed.size(), to_load[server].size(),
              to_unload[server].size());
  std::fflush(stdout);
  RETURN_IF_ERROR(ChangeExperts(/*load=*/true, to_load));
  // No plan here routes to what the placement does not give this server,
  // and no migration runs (mu_ is held); a follower still on an older
  // placement might, so extras stay until every follower has the current
  // one.
  if (followers_->AllCurrent()) {
    RETURN_IF_ERROR(ChangeExperts(/*load=*/false, to_unload));
  }
  return absl::OkStatus();
}

std::vector<std::vector<int64_t>> Rebalancer::CurrentLoad() {
  const ModelConfig& config = engine_->config();
  std::vector<std::vector<int64_t>> load =
      TokensByLayerExpert(engine_->Totals(), config);
  const std::vector<std::vector<int64_t>> followers = followers_->CollectLoad(
      config.num_layers, config.num_experts,
      absl::Seconds(options_.follower_timeout_seconds));
  for (int l = 0; l < config.num_layers; ++l) {
    for (int e = 0; e < config.num_experts; ++e) load[l][e] += followers[l][e];
  }
  return load;
}

absl::StatusOr<RebalanceResult> Rebalancer::Rebalance(bool force) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<RebalanceResult> result = RebalanceLocked(force);
  if (!result.ok()) {
    metrics_->RecordRebalance("failed", 0, 0);
    return result;
  }
  if (result->applied) {
    metrics_->RecordRebalance("applied", result->imbalance_before,
                              result->imbalance_after);
    metrics_->SetServerExperts(*engine_->placement());
    std::fprintf(stderr,
                 "router: rebalanced: imbalance %.3f -> %.3f over %lld "
                 "window tokens, %d experts loaded, %d unloaded, %.3f s\n",
                 result->imbalance_before, result->imbalance_after,
                 static_cast<long long>(result->window_tokens), result->loaded,
                 result->unloaded, result->seconds);
  } else {
    metrics_->RecordRebalance("skipped", result->imbalance_before,
                              result->imbalance_before);
  }
  return result;
}

absl::StatusOr<RebalanceResult> Rebalancer::RebalanceLocked(bool force) {
  const absl::Time start = absl::Now();
  const ModelConfig& config = engine_->config();
  const std::shared_ptr<const PlacementTable> current = engine_->placement();
  const int num_servers = current->num_servers();
  const std::vector<std::vector<int64_t>> now = CurrentLoad();
  // The window's tokens per [layer][expert].
  std::vector<std::vector<int64_t>> window_tokens;
  RebalanceResult result;
  if (options_.window_seconds > 0) {
    absl::MutexLock lock(&window_mu_);
    absl::Duration covered;
    window_tokens = window_->Tokens(Now(), now, &covered);
    result.window_seconds = absl::ToDoubleSeconds(covered);
  } else {
    window_tokens = now;
    for (size_t l = 0; l < now.size(); ++l) {
      for (size_t e = 0; e < now[l].size(); ++e) {
        window_tokens[l][e] =
            std::max<int64_t>(now[l][e] - window_start_[l][e], 0);
      }
    }
    result.window_seconds = absl::ToDoubleSeconds(Now() - window_start_time_);
  }
  EplbOptions eplb;
  eplb.num_servers = num_servers;
  eplb.slots_per_server =
      options_.slots_per_server > 0
          ? options_.slots_per_server
          : std::min(config.num_experts,
                     MaxExpertsPerServerLayer(*current, config) + 1);

  const bool hierarchical = options_.num_nodes > 1;
  HierarchicalEplbOptions by_node;
  by_node.servers = eplb;
  by_node.num_nodes = options_.num_nodes;
  by_node.num_expert_groups = ExpertGroups(config);
  if (hierarchical) {
    if (absl::Status ok = CheckHierarchical(config.num_experts, by_node);
        !ok.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rebalance: the expert servers form ", options_.num_nodes,
          " nodes (--expert_server_nodes), but ", ok.message()));
    }
    result.policy = absl::StrCat("hierarchical (", options_.num_nodes,
                                 " nodes, ", by_node.num_expert_groups,
                                 " expert groups)");
  }
  PlacementTable next(num_servers);
  double sum_max_before = 0, sum_max_after = 0, sum_mean = 0;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    if (!config.IsMoeLayer(layer)) continue;
    std::vector<double> load(config.num_experts);
    std::vector<std::vector<int>> servers(config.num_experts);
    for (int e = 0; e < config.num_experts; ++e) {
      load[e] = static_cast<double>(window_tokens[layer][e]);
      result.window_tokens += static_cast<int64_t>(load[e]);
      for (int32_t s : current->Replicas(layer, e)) servers[e].push_back(s);
    }
    const LayerPlacementPlan before =
        EvaluatePlacement(load, servers, num_servers);
    absl::StatusOr<LayerPlacementPlan> plan =
        hierarchical ? PlanHierarchicalLayerPlacement(load, by_node)
                     : PlanLayerPlacement(load, eplb);
    if (!plan.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rebalance: layer ", layer, ": ", plan.status().message()));
    }
    // A layer the plan does not improve keeps its placement: no moves.
    const bool improves = plan->max_load < before.max_load;
    const std::vector<std::vector<int>>& chosen =
        improves ? plan->servers : servers;
    for (int e = 0; e < config.num_experts; ++e) {
      for (int s : chosen[e]) {
        absl::Status added = next.Add(layer, e, s);
        if (!added.ok()) return added;
      }
    }
    sum_max_before += before.max_load;
    sum_max_after += improves ? plan->max_load : before.max_load;
    sum_mean += before.mean_load;
  }
  if (sum_mean <= 0) {
    result.reason =
        options_.window_seconds > 0
            ? absl::StrCat("no tokens were routed in the last ",
                           options_.window_seconds, " s")
            : "no tokens were routed since the last rebalance";
    result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return result;
  }
  result.imbalance_before = sum_max_before / sum_mean;
  result.imbalance_after = sum_max_after / sum_mean;
  const bool gains_enough = result.imbalance_after <=
                            result.imbalance_before * (1 - options_.min_gain);
  const bool gains = result.imbalance_after < result.imbalance_before;
  if (!(gains_enough || (force && gains))) {
    result.reason = absl::StrCat(
        "the predicted imbalance ", result.imbalance_after, " is not ",
        force ? "below" : absl::StrCat(options_.min_gain * 100, "% below"),
        " the current ", result.imbalance_before);
    result.imbalance_after = result.imbalance_before;
    result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return result;
  }

  // What each server gains and loses.
  std::vector<std::vector<LayerExpert>> to_load(num_servers);
  std::vector<std::vector<LayerExpert>> to_unload(num_servers);
  for (int s = 0; s < num_servers; ++s) {
    const std::vector<LayerExpert> had = current->ExpertsOn(s);
    const std::vector<LayerExpert> gets = next.ExpertsOn(s);
    std::set_difference(gets.begin(), gets.end(), had.begin(), had.end(),
                        std::back_inserter(to_load[s]));
    std::set_difference(had.begin(), had.end(), gets.begin(), gets.end(),
                        std::back_inserter(to_unload[s]));
    result.loaded += static_cast<int>(to_load[s].size());
    result.unloaded += static_cast<int>(to_unload[s].size());
  }
  if (absl::Status loaded = ChangeExperts(/*load=*/true, to_load);
      !loaded.ok()) {
    return loaded;
  }
  const PlacementTable published = next;
  absl::StatusOr<uint64_t> version = engine_->SwitchPlacement(std::move(next));
  if (!version.ok()) return version.status();
  followers_->SetCurrent(*version, published);
  // Calls planned with the old placement, here or at a follower, may still
  // use an old replica.
  engine_->AwaitPlansBefore(*version);
  const std::vector<std::string> lagging = followers_->AwaitAcknowledged(
      *version, absl::Seconds(options_.follower_timeout_seconds));
  if (!lagging.empty()) {
    result.reason = absl::StrCat(
        "switched, but ", absl::StrJoin(lagging, ", "),
        " did not confirm the new placement within ",
        options_.follower_timeout_seconds,
        " s, so the experts it may still use stay loaded");
    result.unloaded = 0;
  } else if (absl::Status unloaded = ChangeExperts(/*load=*/false, to_unload);
             !unloaded.ok()) {
    // The new placement serves; the extra experts only cost memory.
    result.reason = absl::StrCat("switched, but unloading failed: ",
                                 unloaded.message());
  }
  window_start_ = now;
  window_start_time_ = Now();
  result.applied = true;
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return result;
}

absl::Status Rebalancer::ChangeExperts(
    bool load, const std::vector<std::vector<LayerExpert>>& per_server) {
  std::vector<absl::Status> statuses(per_server.size());
  std::vector<std::thread> calls;
  for (size_t s = 0; s < per_server.size(); ++s) {
    if (per_server[s].empty()) continue;
    calls.emplace_back([this, s, load, &per_server, &statuses] {
      v1::ChangeExpertsRequest request;
      for (const LayerExpert& id : per_server[s]) {
        v1::ExpertId* out = request.add_experts();
        out->set_layer(id.layer);
        out->set_expert(id.expert);
      }
      grpc::ClientContext context;
      context.set_deadline(
          std::chrono::system_clock::now() +
          std::chrono::milliseconds(
              static_cast<int64_t>(options_.load_timeout_seconds * 1000)));
      v1::ChangeExpertsResponse response;
      const grpc::Status status =
          load ? stubs_[s]->LoadExperts(&context, request, &response)
               : stubs_[s]->UnloadExperts(&context, request, &response);
      if (!status.ok()) {
        statuses[s] = absl::UnavailableError(absl::StrCat(
            load ? "LoadExperts" : "UnloadExperts", " on expert server ", s,
            " (", addresses_[s], ") failed: ", status.error_message()));
      }
    });
  }
  for (std::thread& call : calls) call.join();
  for (const absl::Status& status : statuses) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace moe
