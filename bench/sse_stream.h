// The client side of the HTTP latency measurement: one POST to an
// OpenAI-compatible streaming endpoint over Boost.Beast, with the arrival
// time of every Server-Sent Event that carries tokens.
#ifndef MOE_BENCH_SSE_STREAM_H_
#define MOE_BENCH_SSE_STREAM_H_

#include <string>

#include "absl/status/statusor.h"
#include "bench/bench_cluster.h"

namespace moe::bench {

// POSTs `body` (JSON with "stream": true and "return_token_ids": true) to
// `url` ("http://HOST:PORT/PATH") and reads the event stream to its
// `data: [DONE]`. `tokens` counts the ids of choices[0].token_ids; `first`
// and `last` are when the first and last events with ids arrived.
absl::StatusOr<StreamTimes> RunSseStream(const std::string& url,
                                         const std::string& body);

}  // namespace moe::bench

#endif  // MOE_BENCH_SSE_STREAM_H_
