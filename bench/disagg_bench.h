// Disaggregation benchmarks (SPEC "Disaggregation and KV cache"):
// K/V transfer throughput and its share of the time to first token, the
// time to first token of a prompt whose prefix is cached, and micro-batch
// ping-pong against none.
#ifndef MOE_BENCH_DISAGG_BENCH_H_
#define MOE_BENCH_DISAGG_BENCH_H_

#include <cstdint>
#include <string>

#include "moe/v1/generate.grpc.pb.h"

namespace moe::bench {

struct KvTransferResult {
  int64_t bytes = 0;              // K/V of the prompt
  double gbps = 0;                // bytes / pure transfer time, 1e9 B/s
  double transfer_seconds = 0;    // pure transfer (prompt cached on P)
  double ttft_seconds = 0;        // uncached prompt, first token on D
  double tail_seconds = 0;        // of it, transfer after the prefill ended
  double overlapped_seconds = 0;  // transfer time overlapped with prefill
  double ttft_share = 0;          // tail / TTFT
};

// A `prompt_tokens` prompt prefilled on the prefill server at
// `prefill_address` into a reservation on the decode server at
// `decode_address`, through the internal API (as the gateway does), so that
// the prefill server's own transfer figures are read. The TTFT run is the
// prompt uncached; the throughput run repeats it, so that the prefill
// server computes only the last block and ships the whole K/V at once.
// Medians of `repeats` runs of each.
KvTransferResult MeasureKvTransfer(const std::string& prefill_address,
                                   const std::string& decode_address,
                                   int vocab, int prompt_tokens, int repeats);

struct PrefixHitResult {
  double uncached_ttft_seconds = 0;
  double cached_ttft_seconds = 0;
  int cached_tokens = 0;  // as reported in the usage
  double ratio = 0;       // cached / uncached
};

// TTFT through `gateway` of a `prompt_tokens` prompt whose first
// `cached_fraction` was prefilled before (by another prompt sharing it),
// over the TTFT of a prompt of the same length nobody sent before; medians
// of `repeats` pairs.
PrefixHitResult MeasurePrefixHit(v1::Inference::Stub& gateway, int vocab,
                                 int prompt_tokens, double cached_fraction,
                                 int repeats);

}  // namespace moe::bench

#endif  // MOE_BENCH_DISAGG_BENCH_H_
