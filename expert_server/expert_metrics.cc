#include "expert_server/expert_metrics.h"

#include <string>

#include "core/metrics/buckets.h"
#include "prometheus/family.h"

namespace moe {

ExpertMetrics::ExpertMetrics(
    prometheus::Registry& registry,
    const std::vector<std::pair<int, int>>& hosted_experts, bool per_expert)
    : per_expert_(per_expert),
      tokens_family_(&prometheus::BuildCounter()
                          .Name("moe_expert_tokens_total")
                          .Help("Tokens computed per expert.")
                          .Register(registry)),
      groups_family_(&prometheus::BuildCounter()
                          .Name("moe_expert_groups_total")
                          .Help("(layer, expert, tokens) groups computed.")
                          .Register(registry)) {
  hosted_ = &prometheus::BuildGauge()
                 .Name("moe_expert_hosted_experts")
                 .Help("(layer, expert) pairs this server hosts now.")
                 .Register(registry)
                 .Add({});
  AddExperts(hosted_experts);
  hosted_->Set(static_cast<double>(hosted_experts.size()));
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

void ExpertMetrics::AddExperts(
    const std::vector<std::pair<int, int>>& experts) {
  absl::MutexLock lock(&mu_);
  for (const auto& [layer, expert] : experts) {
    const std::string layer_label = std::to_string(layer);
    if (per_expert_) {
      if (!tokens_.contains({layer, expert})) {
        tokens_[{layer, expert}] = &tokens_family_->Add(
            {{"layer", layer_label}, {"expert", std::to_string(expert)}});
      }
    } else if (!tokens_by_layer_.contains(layer)) {
      tokens_by_layer_[layer] = &tokens_family_->Add({{"layer", layer_label}});
    }
    if (!groups_.contains(layer)) {
      groups_[layer] = &groups_family_->Add({{"layer", layer_label}});
    }
  }
}

void ExpertMetrics::SetHostedExperts(int64_t count) {
  hosted_->Set(static_cast<double>(count));
}

void ExpertMetrics::RecordCall(absl::Span<const ExpertWork> work,
                               int64_t bytes_in, int64_t bytes_out,
                               double compute_seconds) {
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const ExpertWork& w : work) {
      // Validated work names experts whose series AddExperts created.
      if (per_expert_) {
        auto it = tokens_.find({w.layer, w.expert});
        if (it != tokens_.end()) {
          it->second->Increment(static_cast<double>(w.tokens));
        }
      } else if (auto it = tokens_by_layer_.find(w.layer);
                 it != tokens_by_layer_.end()) {
        it->second->Increment(static_cast<double>(w.tokens));
      }
      if (auto it = groups_.find(w.layer); it != groups_.end()) {
        it->second->Increment();
      }
      group_tokens_->Observe(static_cast<double>(w.tokens));
    }
  }
  compute_seconds_->Observe(compute_seconds);
  received_bytes_->Increment(static_cast<double>(bytes_in));
  sent_bytes_->Increment(static_cast<double>(bytes_out));
}

}  // namespace moe
