// The attention server's Prometheus metrics (deploy/metrics.md, "Attention
// servers"): queue and batch, step latency, KV blocks, prefix cache, and K/V
// transfers. Every series carries the server's `role`.
#ifndef MOE_ATTENTION_SERVER_ATTENTION_METRICS_H_
#define MOE_ATTENTION_SERVER_ATTENTION_METRICS_H_

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "attention_server/attention_engine.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace moe {

enum class KvTransferDirection { kSent, kReceived };

// Thread-safe.
class AttentionMetrics : public EngineMonitor {
 public:
  // Registers the families in `registry` (which must outlive this object)
  // with the const label role=`role` ("both", "prefill" or "decode").
  AttentionMetrics(prometheus::Registry& registry, const std::string& role);

  // EngineMonitor.
  void OnLoad(const AttentionLoadInfo& load) override;
  void OnStep(int sequences, int prompt_tokens, double seconds) override;

  // One K/V transfer ended: `bytes` of blocks moved in `seconds`; `ok`
  // when the whole K/V arrived (or was acknowledged).
  void RecordKvTransfer(KvTransferDirection direction, int64_t bytes,
                        double seconds, bool ok);

 private:
  struct TransferSeries {
    prometheus::Counter* bytes;
    prometheus::Counter* seconds;
    prometheus::Counter* ok;
    prometheus::Counter* failed;
  };

  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Histogram* batch_size_;
  prometheus::Histogram* step_seconds_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Gauge* blocks_used_;
  prometheus::Gauge* blocks_free_;
  prometheus::Gauge* usage_;
  prometheus::Counter* prefix_queries_;
  prometheus::Counter* prefix_hits_;
  prometheus::Counter* preemptions_;
  TransferSeries sent_;
  TransferSeries received_;

  // The engine's cumulative counts at the previous OnLoad, turned into
  // counter increments.
  absl::Mutex mu_;
  int64_t last_generated_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_queried_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_hit_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_ATTENTION_METRICS_H_
