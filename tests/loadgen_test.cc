// moe-loadgen's pieces without a cluster: arrival processes, workload
// lengths and limits, trace parsing, percentiles, SLOs and goodput.
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tools/moe_loadgen/arrivals.h"
#include "tools/moe_loadgen/summary.h"
#include "tools/moe_loadgen/workload.h"

namespace moe::loadgen {
namespace {

using ::testing::HasSubstr;

// Mean and coefficient of variation of the gaps of `offsets`.
std::pair<double, double> GapStats(const std::vector<double>& offsets) {
  std::vector<double> gaps;
  double last = 0;
  for (double t : offsets) {
    gaps.push_back(t - last);
    last = t;
  }
  const double mean = std::accumulate(gaps.begin(), gaps.end(), 0.0) / gaps.size();
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  return {mean, std::sqrt(var / gaps.size()) / mean};
}

TEST(ArrivalsTest, PoissonAndGammaHaveTheAskedRateAndBurstiness) {
  const auto poisson = ArrivalOffsets(ArrivalKind::kPoisson, 20000, 8.0, 1.0, 1);
  ASSERT_TRUE(poisson.ok());
  auto [mean, cv] = GapStats(*poisson);
  EXPECT_NEAR(mean, 1.0 / 8.0, 0.005);
  EXPECT_NEAR(cv, 1.0, 0.05);  // exponential gaps
  // Gamma with shape k has CV 1/sqrt(k): burstier below 1, steadier above.
  for (double k : {0.25, 4.0}) {
    const auto gamma = ArrivalOffsets(ArrivalKind::kGamma, 20000, 8.0, k, 2);
    ASSERT_TRUE(gamma.ok());
    std::tie(mean, cv) = GapStats(*gamma);
    EXPECT_NEAR(mean, 1.0 / 8.0, 0.01) << k;
    EXPECT_NEAR(cv, 1.0 / std::sqrt(k), 0.1) << k;
  }
  EXPECT_TRUE(std::is_sorted(poisson->begin(), poisson->end()));
  const auto closed = ArrivalOffsets(ArrivalKind::kConcurrency, 5, 0, 0, 0);
  ASSERT_TRUE(closed.ok());
  EXPECT_EQ(*closed, std::vector<double>(5, 0.0));
  EXPECT_FALSE(ArrivalOffsets(ArrivalKind::kPoisson, 5, 0, 1, 0).ok());
  EXPECT_FALSE(ArrivalOffsets(ArrivalKind::kGamma, 5, 1, -1, 0).ok());
}

TEST(WorkloadTest, LengthsFollowTheDistributionAndFitTheContext) {
  RandomWorkload w;
  w.num_requests = 2000;
  w.input_len = 100;
  w.output_len = 20;
  w.distribution = LengthDistribution::kUniform;
  w.range_ratio = 0.5;
  w.shared_prefix_len = 8;
  w.num_prefixes = 2;
  const ModelLimits limits{1000, 4096};
  const auto specs = BuildRandomWorkload(w, limits);
  ASSERT_TRUE(specs.ok()) << specs.status();
  double total = 0;
  for (const RequestSpec& s : *specs) {
    const int tail = static_cast<int>(s.prompt_ids.size()) - 8;
    EXPECT_GE(tail, 50);
    EXPECT_LE(tail, 150);
    total += tail;
    for (int32_t id : s.prompt_ids) {
      EXPECT_GE(id, 1);
      EXPECT_LT(id, 1000);
    }
  }
  EXPECT_NEAR(total / specs->size(), 100, 3);
  // Round-robin prefixes: requests 0 and 2 share theirs, 0 and 1 do not.
  EXPECT_TRUE(std::equal((*specs)[0].prompt_ids.begin(),
                         (*specs)[0].prompt_ids.begin() + 8,
                         (*specs)[2].prompt_ids.begin()));
  EXPECT_FALSE(std::equal((*specs)[0].prompt_ids.begin(),
                          (*specs)[0].prompt_ids.begin() + 8,
                          (*specs)[1].prompt_ids.begin()));
  // Too long for a 64-token context: shortened to fit.
  w.num_requests = 3;
  w.distribution = LengthDistribution::kFixed;
  const auto fitted = BuildRandomWorkload(w, ModelLimits{1000, 64});
  ASSERT_TRUE(fitted.ok());
  for (const RequestSpec& s : *fitted) {
    EXPECT_LE(static_cast<int>(s.prompt_ids.size()) + s.max_tokens, 64);
  }
  w.num_requests = 0;
  EXPECT_THAT(std::string(BuildRandomWorkload(w, limits).status().message()),
              HasSubstr("--num_requests"));
}

TEST(WorkloadTest, TracesAreReadAndBadLinesNamed) {
  testing::TempDir dir;
  const std::string path = dir.Join("t.jsonl");
  testing::WriteFileOrDie(
      path,
      "{\"timestamp\": 0.5, \"prompt_ids\": [5, 6], \"output_length\": 3}\n"
      "\n"
      "{\"timestamp\": 1.5, \"input_length\": 10, \"output_length\": 4}\n");
  const auto specs = LoadTrace(path, 2.0, ModelLimits{100, 4096}, 0);
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 2u);
  EXPECT_EQ((*specs)[0].prompt_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_DOUBLE_EQ(*(*specs)[0].arrival_seconds, 0.25);
  EXPECT_EQ((*specs)[1].prompt_ids.size(), 10u);
  EXPECT_DOUBLE_EQ(*(*specs)[1].arrival_seconds, 0.75);
  for (const auto& [line, field] : std::vector<std::pair<std::string, std::string>>{
           {"{\"timestamp\": 1, \"prompt_ids\": [500], \"output_length\": 3}",
            "prompt_ids"},
           {"{\"prompt_ids\": [1], \"output_length\": 3}", "timestamp"},
           {"{\"timestamp\": 1, \"prompt_ids\": [1]}", "output_length"},
           {"[1, 2]", "not a JSON object"}}) {
    testing::WriteFileOrDie(path, line + "\n");
    const auto bad = LoadTrace(path, 1.0, ModelLimits{100, 4096}, 0);
    ASSERT_FALSE(bad.ok()) << line;
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("line 1"));
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr(field));
  }
}

TEST(SummaryTest, PercentilesInterpolateLikeNumpy) {
  const Distribution d = Distribute({0.001, 0.002, 0.003, 0.004, 0.010});
  EXPECT_EQ(d.count, 5);
  EXPECT_DOUBLE_EQ(d.mean, 4.0);
  EXPECT_DOUBLE_EQ(d.median, 3.0);
  EXPECT_NEAR(d.p90, 7.6, 1e-9);   // 4 + 0.6 * (10 - 4)
  EXPECT_NEAR(d.p99, 9.76, 1e-9);  // 4 + 0.96 * 6
  EXPECT_EQ(Distribute({}).count, 0);
}

TEST(SummaryTest, GoodputCountsCompletedRequestsMeetingEverySlo) {
  const auto slo = ParseSlo("ttft:100, tpot:10");
  ASSERT_TRUE(slo.ok());
  RunOutput output;
  output.duration_seconds = 2;
  RequestResult fast;  // TTFT 50 ms, 11 tokens in 0.15 s: TPOT 10 ms
  fast.prompt_tokens = 4;
  fast.output_tokens = 11;
  fast.ttft = 0.05;
  fast.e2e = 0.15;
  RequestResult slow = fast;  // TTFT 200 ms
  slow.ttft = 0.2;
  slow.e2e = 0.3;
  RequestResult failed;
  failed.code = grpc::StatusCode::UNAVAILABLE;
  failed.output_tokens = 2;
  output.results = {fast, slow, failed};
  const RunSummary s = Summarize(output, RunOptions(), *slo);
  EXPECT_EQ(s.sent, 3);
  EXPECT_EQ(s.completed, 2);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.errors.at("UNAVAILABLE"), 1);
  EXPECT_EQ(s.output_tokens, 24);
  EXPECT_EQ(s.input_tokens, 8);
  EXPECT_EQ(*s.good_requests, 1);
  EXPECT_DOUBLE_EQ(*s.goodput, 0.5);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.0);
  EXPECT_EQ(s.tpot_ms.count, 2);
  EXPECT_NEAR(s.tpot_ms.median, 10.0, 1e-9);
  EXPECT_FALSE(ParseSlo("ttft").ok());
  EXPECT_THAT(std::string(ParseSlo("p99:5").status().message()),
              HasSubstr("unknown SLO"));
}

}  // namespace
}  // namespace moe::loadgen
