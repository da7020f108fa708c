#include "expert_server/expert_metrics.h"

#include <string>

#include "core/metrics/buckets.h"
#include "prometheus/family.h"

namespace moe {

ExpertMetrics::ExpertMetrics(
    prometheus::Registry& registry,
    const std::vector<std::pair<int, int>>& hosted_experts, bool per_expert)
    : per_expert_(per_expert) {
  auto& tokens = prometheus::BuildCounter()
                     .Name("moe_expert_tokens_total")
                     .Help("Tokens computed per expert.")
                     .Register(registry);
  auto& groups = prometheus::BuildCounter()
                     .Name("moe_expert_groups_total")
                     .Help("(layer, expert, tokens) groups computed.")
                     .Register(registry);
  for (const auto& [layer, expert] : hosted_experts) {
    const std::string layer_label = std::to_string(layer);
    if (per_expert) {
      tokens_[{layer, expert}] = &tokens.Add(
          {{"layer", layer_label}, {"expert", std::to_string(expert)}});
    } else if (!tokens_by_layer_.contains(layer)) {
      tokens_by_layer_[layer] = &tokens.Add({{"layer", layer_label}});
    }
    if (!groups_.contains(layer)) {
      groups_[layer] = &groups.Add({{"layer", layer_label}});
    }
  }
  group_tokens_ = &prometheus::BuildHistogram()
                       .Name("moe_expert_group_tokens")
                       .Help("Tokens per (layer, expert) group.")
                       .Register(registry)
                       .Add({}, metrics::PowersOfTwoBuckets(4096));
  compute_seconds_ = &prometheus::BuildHistogram()
                          .Name("moe_expert_compute_seconds")
                          .Help("Compute time of one call (all its groups).")
                          .Register(registry)
                          .Add({}, metrics::StepLatencyBuckets());
  received_bytes_ = &prometheus::BuildCounter()
                         .Name("moe_expert_received_bytes_total")
                         .Help("Tensor bytes received in calls.")
                         .Register(registry)
                         .Add({});
  sent_bytes_ = &prometheus::BuildCounter()
                     .Name("moe_expert_sent_bytes_total")
                     .Help("Tensor bytes sent back.")
                     .Register(registry)
                     .Add({});
}

void ExpertMetrics::RecordCall(absl::Span<const ExpertWork> work,
                               int64_t bytes_in, int64_t bytes_out,
                               double compute_seconds) {
  for (const ExpertWork& w : work) {
    // Validated work names hosted experts only, so the lookups succeed.
    if (per_expert_) {
      tokens_.at({w.layer, w.expert})->Increment(static_cast<double>(w.tokens));
    } else {
      tokens_by_layer_.at(w.layer)->Increment(static_cast<double>(w.tokens));
    }
    groups_.at(w.layer)->Increment();
    group_tokens_->Observe(static_cast<double>(w.tokens));
  }
  compute_seconds_->Observe(compute_seconds);
  received_bytes_->Increment(static_cast<double>(bytes_in));
  sent_bytes_->Increment(static_cast<double>(bytes_out));
}

}  // namespace moe
