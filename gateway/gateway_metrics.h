// The gateway's Prometheus metrics (deploy/metrics.md, "Gateway"): calls by
// status code and finish reason, rejections, the request latencies users
// judge a server by (TTFT, inter-token latency, time per output token, e2e;
// vLLM's buckets), running and waiting requests, prompt and generated
// tokens.
#ifndef MOE_GATEWAY_GATEWAY_METRICS_H_
#define MOE_GATEWAY_GATEWAY_METRICS_H_

#include <memory>

#include "absl/status/status.h"
#include "core/rpc/token_stream_writer.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace moe {

// Thread-safe.
class GatewayMetrics {
 public:
  enum class Rejection {
    kInvalidArgument,
    kOverCapacity,
    kDraining,
    kUnauthenticated,  // no or a wrong bearer token
  };

  // Registers the families in `registry`, which must outlive this object.
  explicit GatewayMetrics(prometheus::Registry& registry);

  // A call refused before any work; it also counts as a request that ended
  // with `code`.
  void RecordRejection(Rejection reason, absl::StatusCode code);
  // Abort or GetModelInfo refused for its bearer token: counted as a
  // rejection (reason "unauthenticated") but not as a Generate call.
  void RecordUnauthenticatedCall();
  // A request moved to another attention server after its server failed.
  void RecordMigration();

  // An accepted call with `prompt_tokens`: the observer to set on its
  // stream, which records its latencies, tokens and end. It counts as
  // waiting until its first token, then as running until it closes.
  std::shared_ptr<TokenStreamObserver> TrackRequest(int prompt_tokens);

 private:
  class RequestTracker;

  void CountRequest(absl::StatusCode code, v1::FinishReason reason);

  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Counter* rejected_invalid_;
  prometheus::Counter* rejected_capacity_;
  prometheus::Counter* rejected_draining_;
  prometheus::Counter* rejected_unauthenticated_;
  prometheus::Counter* migrations_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* tpot_;
  prometheus::Histogram* e2e_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
};

}  // namespace moe

#endif  // MOE_GATEWAY_GATEWAY_METRICS_H_
