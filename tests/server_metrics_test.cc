// The servers' metric classes against the exposition they produce: the
// gateway's per-request tracking, the router's server-down transitions and
// per-layer counts, and automatic placement by StatefulSet ordinal.
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "expert_server/auto_placement.h"
#include "gateway/gateway_metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "router/placement_table.h"
#include "router/router_metrics.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Exposition(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

TEST(GatewayMetricsTest, ARequestIsWaitingThenRunningThenCounted) {
  prometheus::Registry registry;
  GatewayMetrics metrics(registry);
  std::shared_ptr<TokenStreamObserver> request = metrics.TrackRequest(5);
  std::string text = Exposition(registry);
  EXPECT_THAT(text, HasSubstr("moe_gateway_requests_waiting 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_prompt_tokens_total 5\n"));

  request->OnTokens(1);
  request->OnTokens(2);  // two tokens at once: one gap, one zero
  text = Exposition(registry);
  EXPECT_THAT(text, HasSubstr("moe_gateway_requests_waiting 0\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_requests_running 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_time_to_first_token_seconds_count 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_inter_token_latency_seconds_count 2\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_generation_tokens_total 3\n"));

  request->OnClose(grpc::Status::OK, v1::FINISH_REASON_STOP);
  text = Exposition(registry);
  EXPECT_THAT(text, HasSubstr("moe_gateway_requests_running 0\n"));
  EXPECT_THAT(text, HasSubstr(
      "moe_gateway_requests_total{code=\"OK\",finish_reason=\"stop\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_time_per_output_token_seconds_count 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_e2e_request_latency_seconds_count 1\n"));
}

TEST(GatewayMetricsTest, AFailedRequestWithoutTokensLeavesTheWaitingGauge) {
  prometheus::Registry registry;
  GatewayMetrics metrics(registry);
  std::shared_ptr<TokenStreamObserver> request = metrics.TrackRequest(3);
  request->OnClose(grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone"),
                   v1::FINISH_REASON_UNSPECIFIED);
  metrics.RecordRejection(GatewayMetrics::Rejection::kOverCapacity,
                          absl::StatusCode::kResourceExhausted);
  const std::string text = Exposition(registry);
  EXPECT_THAT(text, HasSubstr("moe_gateway_requests_waiting 0\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_requests_running 0\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_requests_total{code=\"UNAVAILABLE\","
                              "finish_reason=\"none\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_requests_total{code=\"RESOURCE_"
                              "EXHAUSTED\",finish_reason=\"none\"} 1\n"));
  EXPECT_THAT(text, HasSubstr(
      "moe_gateway_rejections_total{reason=\"over_capacity\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_gateway_time_per_output_token_seconds_count 0\n"));
}

ModelConfig MoeConfig(int layers, int experts) {
  ModelConfig c;
  c.family = ModelFamily::kMixtral;
  c.num_layers = layers;
  c.num_experts = experts;
  c.num_experts_per_tok = 2;
  return c;
}

TEST(RouterMetricsTest, ServerStateTransitionsSetUpAndCountOutages) {
  prometheus::Registry registry;
  const ModelConfig config = MoeConfig(2, 4);
  absl::StatusOr<PlacementTable> placement = AutoPlacement(config, 2, 1);
  ASSERT_TRUE(placement.ok());
  RouterMetrics metrics(registry, config, *placement, {"a:1", "b:2"},
                        /*per_expert=*/true);
  metrics.RecordServerState(1, /*up=*/false);
  std::string text = Exposition(registry);
  EXPECT_THAT(text, HasSubstr("moe_router_expert_server_up{server=\"b:2\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("moe_router_expert_server_up{server=\"a:1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr(
      "moe_router_expert_server_down_total{server=\"b:2\"} 1\n"));
  // Back up; a later outage counts again.
  metrics.RecordServerState(1, /*up=*/true);
  text = Exposition(registry);
  EXPECT_THAT(text, HasSubstr("moe_router_expert_server_up{server=\"b:2\"} 1\n"));
  metrics.RecordServerState(1, /*up=*/false);
  text = Exposition(registry);
  EXPECT_THAT(text, HasSubstr(
      "moe_router_expert_server_down_total{server=\"b:2\"} 2\n"));
}

TEST(RouterMetricsTest, WithoutPerExpertLabelsTokensAreCountedPerLayer) {
  prometheus::Registry registry;
  const ModelConfig config = MoeConfig(2, 4);
  absl::StatusOr<PlacementTable> placement = AutoPlacement(config, 1, 1);
  ASSERT_TRUE(placement.ok());
  RouterMetrics metrics(registry, config, *placement, {"a:1"},
                        /*per_expert=*/false);
  DispatchPlan plan;
  plan.layer = 1;
  plan.stats.layer = 1;
  plan.stats.slots = 6;
  plan.stats.experts.resize(4);
  plan.stats.experts[0].tokens = 3;
  plan.stats.experts[2].tokens = 2;
  plan.stats.experts[3].overflowed = 1;
  plan.stats.experts[3].dropped = 1;
  plan.servers.resize(1);
  plan.servers[0].num_slots = 5;
  metrics.RecordPlan(plan);
  const std::string text = Exposition(registry);
  EXPECT_THAT(text, HasSubstr("moe_router_tokens_total{layer=\"1\"} 5\n"));
  EXPECT_THAT(text, Not(HasSubstr("expert=")));
  EXPECT_THAT(text, HasSubstr("moe_router_dropped_slots_total{layer=\"1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("moe_router_overflowed_slots_total{layer=\"1\"} 1\n"));
  // mean 5/4 over max 3.
  EXPECT_THAT(text, HasSubstr(
      "moe_router_balancedness_ratio{layer=\"1\"} 0.4166666666666667\n"));
  EXPECT_THAT(text, HasSubstr(
      "moe_router_dispatched_slots_total{server=\"a:1\"} 5\n"));
}

TEST(AutoPlacementTest, OrdinalsComeFromStatefulSetHostNames) {
  EXPECT_EQ(*OrdinalFromHostname("moe-expert-0"), 0);
  EXPECT_EQ(*OrdinalFromHostname("moe-expert-12"), 12);
  for (const char* bad : {"moe-expert", "moe-expert-", "expert-x", "", "-"}) {
    absl::StatusOr<int> ordinal = OrdinalFromHostname(bad);
    EXPECT_FALSE(ordinal.ok()) << bad;
    if (!ordinal.ok()) {
      EXPECT_THAT(std::string(ordinal.status().message()),
                  HasSubstr("host name"));
    }
  }
}

TEST(AutoPlacementTest, TheServersTogetherHostEveryExpertReplicasTimes) {
  const ModelConfig config = MoeConfig(3, 8);
  std::multiset<std::pair<int, int>> hosted;
  for (int index = 0; index < 3; ++index) {
    absl::StatusOr<std::set<std::pair<int, int>>> experts =
        AutoPlacedExperts(config, 3, 2, index);
    ASSERT_TRUE(experts.ok()) << experts.status();
    hosted.insert(experts->begin(), experts->end());
  }
  EXPECT_EQ(hosted.size(), 3u * 8u * 2u);
  for (int layer = 0; layer < 3; ++layer) {
    for (int expert = 0; expert < 8; ++expert) {
      EXPECT_EQ(hosted.count({layer, expert}), 2u);
    }
  }
  absl::StatusOr<std::set<std::pair<int, int>>> outside =
      AutoPlacedExperts(config, 3, 1, 3);
  ASSERT_FALSE(outside.ok());
  EXPECT_THAT(std::string(outside.status().message()),
              HasSubstr("--server_index 3"));
  EXPECT_FALSE(AutoPlacedExperts(config, 2, 3, 0).ok());  // replicas > servers
}

}  // namespace
}  // namespace moe
