#include "router/router_metrics.h"

#include "core/metrics/buckets.h"
#include "prometheus/family.h"

namespace moe {

RouterMetrics::RouterMetrics(prometheus::Registry& registry,
                             const ModelConfig& config,
                             const PlacementTable& placement,
                             const std::vector<std::string>& server_addresses,
                             bool per_expert)
    : placement_(placement), per_expert_(per_expert) {
  auto& tokens = prometheus::BuildCounter()
                     .Name("moe_router_tokens_total")
                     .Help("Token slots each expert computed (after capacity "
                           "and rerouting).")
                     .Register(registry);
  auto& overflowed = prometheus::BuildCounter()
                         .Name("moe_router_overflowed_slots_total")
                         .Help("Slots over their expert's capacity.")
                         .Register(registry);
  auto& rerouted = prometheus::BuildCounter()
                       .Name("moe_router_rerouted_slots_total")
                       .Help("Overflowed slots sent to another expert.")
                       .Register(registry);
  auto& dropped = prometheus::BuildCounter()
                      .Name("moe_router_dropped_slots_total")
                      .Help("Overflowed slots computed by no expert.")
                      .Register(registry);
  auto& balancedness =
      prometheus::BuildGauge()
          .Name("moe_router_balancedness_ratio")
          .Help("Mean over max tokens per expert in the layer's latest batch.")
          .Register(registry);
  layers_.resize(config.num_layers);
  for (int l = 0; l < config.num_layers; ++l) {
    if (!config.IsMoeLayer(l)) continue;
    const std::string layer = std::to_string(l);
    LayerSeries& series = layers_[l];
    if (per_expert) {
      for (int e = 0; e < config.num_experts; ++e) {
        series.tokens.push_back(
            &tokens.Add({{"layer", layer}, {"expert", std::to_string(e)}}));
      }
    } else {
      series.tokens.push_back(&tokens.Add({{"layer", layer}}));
    }
    series.overflowed = &overflowed.Add({{"layer", layer}});
    series.rerouted = &rerouted.Add({{"layer", layer}});
    series.dropped = &dropped.Add({{"layer", layer}});
    series.balancedness = &balancedness.Add({{"layer", layer}});
    series.balancedness->Set(1.0);
  }
  auto& dispatched = prometheus::BuildCounter()
                         .Name("moe_router_dispatched_slots_total")
                         .Help("Slots sent to each expert server.")
                         .Register(registry);
  auto& replica_choices =
      prometheus::BuildCounter()
          .Name("moe_router_replica_choices_total")
          .Help("Slots of replicated experts sent to each replica's server.")
          .Register(registry);
  auto& up = prometheus::BuildGauge()
                 .Name("moe_router_expert_server_up")
                 .Help("1 while calls to the expert server succeed, 0 while "
                       "it is marked down.")
                 .Register(registry);
  auto& down = prometheus::BuildCounter()
                   .Name("moe_router_expert_server_down_total")
                   .Help("Times an expert server was marked down.")
                   .Register(registry);
  auto& fallbacks =
      prometheus::BuildCounter()
          .Name("moe_router_data_plane_fallbacks_total")
          .Help(
              "Times the NCCL data plane to an expert server broke, after "
              "which its calls carried their rows over gRPC again.")
          .Register(registry);
  auto& experts =
      prometheus::BuildGauge()
          .Name("moe_router_server_experts")
          .Help("(layer, expert) pairs placed on each expert server.")
          .Register(registry);
  auto& calls =
      prometheus::BuildCounter()
          .Name("moe_router_expert_calls_total")
          .Help("Calls to each expert server by the transport they took: "
                "shared_memory (same host), grpc_stream, or nccl (rows GPU "
                "to GPU).")
          .Register(registry);
  for (const std::string& address : server_addresses) {
    const prometheus::Labels labels = {{"server", address}};
    servers_.push_back({&dispatched.Add(labels), &replica_choices.Add(labels),
                        &up.Add(labels), &down.Add(labels),
                        &fallbacks.Add(labels), &experts.Add(labels)});
    ServerSeries& series = servers_.back();
    series.up->Set(1.0);
    for (ExpertConnection::Transport transport :
         {ExpertConnection::Transport::kNccl,
          ExpertConnection::Transport::kSharedMemory,
          ExpertConnection::Transport::kStream}) {
      prometheus::Counter* counter = &calls.Add(
          {{"server", address},
           {"transport", ExpertConnection::TransportName(transport)}});
      switch (transport) {
        case ExpertConnection::Transport::kNccl:
          series.calls_nccl = counter;
          break;
        case ExpertConnection::Transport::kSharedMemory:
          series.calls_shared_memory = counter;
          break;
        case ExpertConnection::Transport::kStream:
          series.calls_grpc_stream = counter;
          break;
      }
    }
  }
  auto& rebalances = prometheus::BuildCounter()
                         .Name("moe_router_rebalances_total")
                         .Help("Rebalances by result: applied (experts "
                               "moved), skipped (not enough gain or no "
                               "load), failed.")
                         .Register(registry);
  for (const char* result : {"applied", "skipped", "failed"}) {
    rebalances_[result] = &rebalances.Add({{"result", result}});
  }
  auto& imbalance =
      prometheus::BuildGauge()
          .Name("moe_router_imbalance_ratio")
          .Help("Most-loaded over mean expert server tokens in the last "
                "rebalance's window (summed over layers), under the "
                "placement before and after it.")
          .Register(registry);
  imbalance_before_ = &imbalance.Add({{"placement", "before"}});
  imbalance_after_ = &imbalance.Add({{"placement", "after"}});
  imbalance_before_->Set(1.0);
  imbalance_after_->Set(1.0);
  SetServerExperts(placement);
  fanout_seconds_ = &prometheus::BuildHistogram()
                         .Name("moe_router_fanout_seconds")
                         .Help("One MoE layer of one batch: from sending to "
                               "the expert servers until every result is in.")
                         .Register(registry)
                         .Add({}, metrics::StepLatencyBuckets());
}

void RouterMetrics::RecordPlan(const DispatchPlan& plan) {
  LayerSeries& series = layers_[plan.layer];
  if (series.overflowed == nullptr) return;  // not a MoE layer
  const LayerDispatchStats& stats = plan.stats;
  for (size_t e = 0; e < stats.experts.size(); ++e) {
    const double tokens = static_cast<double>(stats.experts[e].tokens);
    if (tokens == 0) continue;
    series.tokens[per_expert_ ? e : 0]->Increment(tokens);
  }
  series.overflowed->Increment(static_cast<double>(stats.overflowed()));
  series.rerouted->Increment(static_cast<double>(stats.rerouted()));
  series.dropped->Increment(static_cast<double>(stats.dropped()));
  if (stats.slots > 0) series.balancedness->Set(stats.Balancedness());
  for (size_t s = 0; s < plan.servers.size() && s < servers_.size(); ++s) {
    const ServerDispatch& dispatch = plan.servers[s];
    if (dispatch.num_slots == 0) continue;
    servers_[s].dispatched->Increment(static_cast<double>(dispatch.num_slots));
    int64_t replicated = 0;
    for (const ExpertGroup& group : dispatch.groups) {
      const PlacementTable& placement =
          plan.placement != nullptr ? *plan.placement : placement_;
      if (placement.Replicas(plan.layer, group.expert).size() > 1) {
        replicated += static_cast<int64_t>(group.tokens.size());
      }
    }
    if (replicated > 0) {
      servers_[s].replica_choices->Increment(static_cast<double>(replicated));
    }
  }
}

void RouterMetrics::RecordFanOut(double seconds) {
  fanout_seconds_->Observe(seconds);
}

void RouterMetrics::RecordServerState(int server, bool up) {
  if (server < 0 || server >= static_cast<int>(servers_.size())) return;
  ServerSeries& series = servers_[server];
  series.up->Set(up ? 1.0 : 0.0);
  if (!up) series.down->Increment();
}

void RouterMetrics::RecordExpertCall(int server,
                                     ExpertConnection::Transport transport) {
  if (server < 0 || server >= static_cast<int>(servers_.size())) return;
  ServerSeries& series = servers_[server];
  switch (transport) {
    case ExpertConnection::Transport::kNccl:
      series.calls_nccl->Increment();
      return;
    case ExpertConnection::Transport::kSharedMemory:
      series.calls_shared_memory->Increment();
      return;
    case ExpertConnection::Transport::kStream:
      series.calls_grpc_stream->Increment();
      return;
  }
}

void RouterMetrics::RecordDataPlaneFallback(int server) {
  if (server < 0 || server >= static_cast<int>(servers_.size())) return;
  servers_[server].data_plane_fallbacks->Increment();
}

void RouterMetrics::RecordRebalance(const std::string& result,
                                    double imbalance_before,
                                    double imbalance_after) {
  auto it = rebalances_.find(result);
  if (it != rebalances_.end()) it->second->Increment();
  if (result == "failed") return;
  imbalance_before_->Set(imbalance_before);
  imbalance_after_->Set(imbalance_after);
}

void RouterMetrics::SetServerExperts(const PlacementTable& placement) {
  for (size_t s = 0; s < servers_.size(); ++s) {
    servers_[s].experts->Set(static_cast<double>(
        placement.ExpertsOn(static_cast<int>(s)).size()));
  }
}

}  // namespace moe
