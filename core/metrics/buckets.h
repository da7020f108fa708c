// Histogram bucket boundaries. The request-latency ones are vLLM's, so that
// dashboards and alerts written for vLLM read our histograms unchanged.
#ifndef MOE_CORE_METRICS_BUCKETS_H_
#define MOE_CORE_METRICS_BUCKETS_H_

#include "prometheus/histogram.h"

namespace moe::metrics {

// Time to first token, seconds (vLLM's time_to_first_token_seconds).
inline prometheus::Histogram::BucketBoundaries TimeToFirstTokenBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}

// Inter-token latency and time per output token, seconds (vLLM's
// inter_token_latency_seconds and time_per_output_token_seconds).
inline prometheus::Histogram::BucketBoundaries PerTokenBuckets() {
  return {0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3,  0.4, 0.5,
          0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
}

// End-to-end request latency, seconds (vLLM's e2e_request_latency_seconds).
inline prometheus::Histogram::BucketBoundaries RequestLatencyBuckets() {
  return {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
          30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}

// Internal step latencies (an engine step, a router fan-out, an expert
// call), seconds: 100 us to 10 s.
inline prometheus::Histogram::BucketBoundaries StepLatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
}

// Counts that grow by powers of two (batch sizes, tokens per group).
inline prometheus::Histogram::BucketBoundaries PowersOfTwoBuckets(int max) {
  prometheus::Histogram::BucketBoundaries bounds;
  for (int b = 1; b <= max; b *= 2) bounds.push_back(b);
  return bounds;
}

}  // namespace moe::metrics

#endif  // MOE_CORE_METRICS_BUCKETS_H_
