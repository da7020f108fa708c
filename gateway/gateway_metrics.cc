#include "gateway/gateway_metrics.h"

#include <chrono>
#include <string>

#include "core/metrics/buckets.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string FinishReasonLabel(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    default:
      return "none";
  }
}

}  // namespace

// One accepted request's stream. Calls come under the stream writer's lock,
// so they never overlap for one request.
class GatewayMetrics::RequestTracker : public TokenStreamObserver {
 public:
  explicit RequestTracker(GatewayMetrics* metrics)
      : metrics_(metrics), arrival_(Clock::now()) {}

  void OnTokens(int count) override {
    const Clock::time_point now = Clock::now();
    if (tokens_ == 0) {
      metrics_->ttft_->Observe(SecondsBetween(arrival_, now));
      metrics_->waiting_->Decrement();
      metrics_->running_->Increment();
      first_token_ = now;
      // Tokens that arrive together after the first have no gap between
      // them.
      for (int i = 1; i < count; ++i) metrics_->itl_->Observe(0.0);
    } else {
      metrics_->itl_->Observe(SecondsBetween(last_token_, now));
      for (int i = 1; i < count; ++i) metrics_->itl_->Observe(0.0);
    }
    last_token_ = now;
    tokens_ += count;
    metrics_->generation_tokens_->Increment(count);
  }

  void OnClose(const grpc::Status& status,
               v1::FinishReason finish_reason) override {
    const Clock::time_point now = Clock::now();
    if (tokens_ == 0) {
      metrics_->waiting_->Decrement();
    } else {
      metrics_->running_->Decrement();
    }
    metrics_->e2e_->Observe(SecondsBetween(arrival_, now));
    if (tokens_ >= 2) {
      metrics_->tpot_->Observe(SecondsBetween(first_token_, last_token_) /
                               (tokens_ - 1));
    }
    metrics_->CountRequest(static_cast<absl::StatusCode>(status.error_code()),
                           status.ok() ? finish_reason
                                       : v1::FINISH_REASON_UNSPECIFIED);
  }

 private:
  GatewayMetrics* metrics_;
  const Clock::time_point arrival_;
  Clock::time_point first_token_;
  Clock::time_point last_token_;
  int64_t tokens_ = 0;
};

GatewayMetrics::GatewayMetrics(prometheus::Registry& registry) {
  requests_ = &prometheus::BuildCounter()
                   .Name("moe_gateway_requests_total")
                   .Help("Generate calls that ended, by gRPC status code and "
                         "finish reason.")
                   .Register(registry);
  auto& rejections = prometheus::BuildCounter()
                         .Name("moe_gateway_rejections_total")
                         .Help("Calls refused before any work, by reason.")
                         .Register(registry);
  rejected_invalid_ = &rejections.Add({{"reason", "invalid_argument"}});
  rejected_capacity_ = &rejections.Add({{"reason", "over_capacity"}});
  rejected_draining_ = &rejections.Add({{"reason", "draining"}});
  rejected_unauthenticated_ = &rejections.Add({{"reason", "unauthenticated"}});
  ttft_ = &prometheus::BuildHistogram()
               .Name("moe_gateway_time_to_first_token_seconds")
               .Help("From a call's arrival to its first token.")
               .Register(registry)
               .Add({}, metrics::TimeToFirstTokenBuckets());
  itl_ = &prometheus::BuildHistogram()
              .Name("moe_gateway_inter_token_latency_seconds")
              .Help("Between consecutive tokens of a stream.")
              .Register(registry)
              .Add({}, metrics::PerTokenBuckets());
  tpot_ = &prometheus::BuildHistogram()
               .Name("moe_gateway_time_per_output_token_seconds")
               .Help("Per request: (last token - first token) / (tokens - 1).")
               .Register(registry)
               .Add({}, metrics::PerTokenBuckets());
  e2e_ = &prometheus::BuildHistogram()
              .Name("moe_gateway_e2e_request_latency_seconds")
              .Help("From a call's arrival to its end.")
              .Register(registry)
              .Add({}, metrics::RequestLatencyBuckets());
  running_ = &prometheus::BuildGauge()
                  .Name("moe_gateway_requests_running")
                  .Help("Streams past their first token, not yet ended.")
                  .Register(registry)
                  .Add({});
  waiting_ = &prometheus::BuildGauge()
                  .Name("moe_gateway_requests_waiting")
                  .Help("Accepted streams waiting for their first token.")
                  .Register(registry)
                  .Add({});
  migrations_ = &prometheus::BuildCounter()
                     .Name("moe_gateway_migrations_total")
                     .Help("Requests continued on another attention server "
                           "after theirs failed mid-stream.")
                     .Register(registry)
                     .Add({});
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("moe_gateway_prompt_tokens_total")
                        .Help("Prompt tokens of accepted requests.")
                        .Register(registry)
                        .Add({});
  generation_tokens_ = &prometheus::BuildCounter()
                            .Name("moe_gateway_generation_tokens_total")
                            .Help("Tokens streamed to clients.")
                            .Register(registry)
                            .Add({});
  // The usual outcome exists from the start, so rate() sees it from 0.
  requests_->Add({{"code", "OK"}, {"finish_reason", "length"}});
}

void GatewayMetrics::CountRequest(absl::StatusCode code,
                                  v1::FinishReason reason) {
  // Bounded: 17 codes x 4 reasons at most.
  requests_
      ->Add({{"code", absl::StatusCodeToString(code)},
             {"finish_reason", FinishReasonLabel(reason)}})
      .Increment();
}

void GatewayMetrics::RecordRejection(Rejection reason, absl::StatusCode code) {
  switch (reason) {
    case Rejection::kInvalidArgument:
      rejected_invalid_->Increment();
      break;
    case Rejection::kOverCapacity:
      rejected_capacity_->Increment();
      break;
    case Rejection::kDraining:
      rejected_draining_->Increment();
      break;
    case Rejection::kUnauthenticated:
      rejected_unauthenticated_->Increment();
      break;
  }
  CountRequest(code, v1::FINISH_REASON_UNSPECIFIED);
}

void GatewayMetrics::RecordUnauthenticatedCall() {
  rejected_unauthenticated_->Increment();
}

std::shared_ptr<TokenStreamObserver> GatewayMetrics::TrackRequest(
    int prompt_tokens) {
  prompt_tokens_->Increment(prompt_tokens);
  waiting_->Increment();
  return std::make_shared<RequestTracker>(this);
}

void GatewayMetrics::RecordMigration() { migrations_->Increment(); }

}  // namespace moe
