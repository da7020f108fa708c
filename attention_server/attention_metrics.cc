#include "attention_server/attention_metrics.h"

#include <algorithm>

#include "core/metrics/buckets.h"

namespace moe {
namespace {

prometheus::Gauge* NewGauge(prometheus::Registry& registry,
                            const prometheus::Labels& labels,
                            const std::string& name, const std::string& help) {
  return &prometheus::BuildGauge()
              .Name(name)
              .Help(help)
              .Labels(labels)
              .Register(registry)
              .Add({});
}

prometheus::Counter* NewCounter(prometheus::Registry& registry,
                                const prometheus::Labels& labels,
                                const std::string& name,
                                const std::string& help) {
  return &prometheus::BuildCounter()
              .Name(name)
              .Help(help)
              .Labels(labels)
              .Register(registry)
              .Add({});
}

}  // namespace

AttentionMetrics::AttentionMetrics(prometheus::Registry& registry,
                                   const std::string& role) {
  const prometheus::Labels labels = {{"role", role}};
  running_ = NewGauge(registry, labels, "moe_attention_requests_running",
                      "Sequences in the running batch.");
  waiting_ = NewGauge(registry, labels, "moe_attention_requests_waiting",
                      "Sequences queued, not yet running.");
  batch_size_ = &prometheus::BuildHistogram()
                     .Name("moe_attention_batch_size")
                     .Help("Sequences per engine step.")
                     .Labels(labels)
                     .Register(registry)
                     .Add({}, metrics::PowersOfTwoBuckets(1024));
  step_seconds_ = &prometheus::BuildHistogram()
                       .Name("moe_attention_step_seconds")
                       .Help("Wall time of one engine step.")
                       .Labels(labels)
                       .Register(registry)
                       .Add({}, metrics::StepLatencyBuckets());
  prompt_tokens_ =
      NewCounter(registry, labels, "moe_attention_prompt_tokens_total",
                 "Prompt tokens computed (prefix cache hits excluded).");
  generation_tokens_ =
      NewCounter(registry, labels, "moe_attention_generation_tokens_total",
                 "Tokens sampled.");
  blocks_used_ = NewGauge(registry, labels, "moe_attention_kv_blocks_used",
                          "KV blocks held by sequences or reservations.");
  blocks_free_ = NewGauge(registry, labels, "moe_attention_kv_blocks_free",
                          "KV blocks free (evictable cached blocks included).");
  usage_ = NewGauge(registry, labels, "moe_attention_kv_usage_ratio",
                    "KV blocks used over all blocks, 0-1.");
  prefix_queries_ = NewCounter(
      registry, labels, "moe_attention_prefix_cache_queries_tokens_total",
      "Prompt tokens looked up in the prefix cache.");
  prefix_hits_ = NewCounter(registry, labels,
                            "moe_attention_prefix_cache_hits_tokens_total",
                            "Prompt tokens whose K/V was reused.");
  preemptions_ = NewCounter(
      registry, labels, "moe_attention_preemptions_total",
      "Sequences preempted (admission reserves the worst case: always 0).");
  auto& bytes = prometheus::BuildCounter()
                    .Name("moe_attention_kv_transfer_bytes_total")
                    .Help("K/V bytes streamed between prefill and decode.")
                    .Labels(labels)
                    .Register(registry);
  auto& seconds = prometheus::BuildCounter()
                      .Name("moe_attention_kv_transfer_seconds_total")
                      .Help("Time spent streaming K/V.")
                      .Labels(labels)
                      .Register(registry);
  auto& transfers = prometheus::BuildCounter()
                        .Name("moe_attention_kv_transfers_total")
                        .Help("K/V transfers that ended, by outcome.")
                        .Labels(labels)
                        .Register(registry);
  for (auto [series, direction] :
       {std::pair{&sent_, "sent"}, std::pair{&received_, "received"}}) {
    series->bytes = &bytes.Add({{"direction", direction}});
    series->seconds = &seconds.Add({{"direction", direction}});
    series->ok = &transfers.Add({{"direction", direction}, {"outcome", "ok"}});
    series->failed =
        &transfers.Add({{"direction", direction}, {"outcome", "failed"}});
  }
}

void AttentionMetrics::OnLoad(const AttentionLoadInfo& load) {
  running_->Set(load.running);
  waiting_->Set(load.waiting);
  const int used = std::max(0, load.kv_blocks_total - load.kv_blocks_free);
  blocks_used_->Set(used);
  blocks_free_->Set(load.kv_blocks_free);
  usage_->Set(load.kv_blocks_total > 0
                  ? static_cast<double>(used) / load.kv_blocks_total
                  : 0.0);
  absl::MutexLock lock(&mu_);
  // The engine's counts only grow; a smaller value would be a reordered
  // snapshot, which adds nothing until the counts pass it again.
  if (load.generated_tokens > last_generated_) {
    generation_tokens_->Increment(
        static_cast<double>(load.generated_tokens - last_generated_));
    last_generated_ = load.generated_tokens;
  }
  if (load.prefix_queried_tokens > last_queried_) {
    prefix_queries_->Increment(
        static_cast<double>(load.prefix_queried_tokens - last_queried_));
    last_queried_ = load.prefix_queried_tokens;
  }
  if (load.prefix_hit_tokens > last_hit_) {
    prefix_hits_->Increment(
        static_cast<double>(load.prefix_hit_tokens - last_hit_));
    last_hit_ = load.prefix_hit_tokens;
  }
}

void AttentionMetrics::OnStep(int sequences, int prompt_tokens,
                              double seconds) {
  batch_size_->Observe(sequences);
  step_seconds_->Observe(seconds);
  if (prompt_tokens > 0) prompt_tokens_->Increment(prompt_tokens);
}

void AttentionMetrics::RecordKvTransfer(KvTransferDirection direction,
                                        int64_t bytes, double seconds,
                                        bool ok) {
  TransferSeries& series =
      direction == KvTransferDirection::kSent ? sent_ : received_;
  series.bytes->Increment(static_cast<double>(bytes));
  series.seconds->Increment(std::max(0.0, seconds));
  (ok ? series.ok : series.failed)->Increment();
}

}  // namespace moe
