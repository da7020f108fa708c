// expert_rtt_vs_echo: the round trip of one router -> expert call (one group
// of 16 tokens of hidden 4096, BF16 expert weights), made the router's way
// (rows gathered into the request, sent over an ExpertConnection, outputs
// decoded), against plain gRPC echoes of the same bytes, all on loopback
// with the servers in this process. The router's way to a server on its
// host is shared memory; the same call over the ExpertStream (the way to
// another host) is measured in the same loop.
#ifndef MOE_BENCH_EXPERT_RTT_H_
#define MOE_BENCH_EXPERT_RTT_H_

#include <string>

namespace moe::bench {

struct ExpertRttOptions {
  std::string work_dir;  // the small generated expert model goes here
  int hidden = 4096;
  int tokens = 16;
  // The expert's FFN width: small, so that the round trip measures the
  // transport and the server's dispatch rather than the FFN (whose compute
  // time is reported separately).
  int intermediate = 64;
  int iterations = 1000;
};

struct ExpertRttResult {
  double expert_median_us = 0;       // the router's round trip, FFN included
  double compute_median_us = 0;      // the server-reported FFN time per call
  double transport_median_us = 0;    // round trip minus FFN time, per call
  // The same call over the ExpertStream (shared memory off), the way calls
  // to an expert server on another host travel.
  double expert_stream_median_us = 0;
  double stream_transport_median_us = 0;
  double echo_stream_median_us = 0;  // same bytes echoed over one stream
  double echo_unary_median_us = 0;   // same bytes echoed by unary calls
  int64_t request_bytes = 0;
};

ExpertRttResult MeasureExpertRtt(const ExpertRttOptions& options);

}  // namespace moe::bench

#endif  // MOE_BENCH_EXPERT_RTT_H_
