// expert_rtt_vs_echo: the round trip of one router -> expert call (one group
// of 16 tokens of hidden 4096, BF16 expert weights) against a plain gRPC
// echo of the same bytes, both on loopback in this process.
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
  int iterations = 300;
};

struct ExpertRttResult {
  double expert_median_us = 0;   // client-observed RunExperts round trip
  double echo_median_us = 0;     // same request bytes echoed
  double compute_median_us = 0;  // server-reported FFN time per call
  int64_t request_bytes = 0;
};

ExpertRttResult MeasureExpertRtt(const ExpertRttOptions& options);

}  // namespace moe::bench

#endif  // MOE_BENCH_EXPERT_RTT_H_
