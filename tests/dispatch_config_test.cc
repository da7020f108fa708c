// ReadDispatchConfig: the router's dispatch config as an attention server
// reads it back (router/dispatch_config.h); every bad field is named.
#include "router/dispatch_config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

v1::DispatchConfig TwoServers() {
  v1::DispatchConfig config;
  config.add_expert_servers("127.0.0.1:5001");
  config.add_expert_servers("127.0.0.1:5002");
  for (int s = 0; s < 2; ++s) {
    v1::ServerPlacement* server = config.add_placement();
    server->set_server(s);
    for (int e = s; e < 4; e += 2) {
      v1::ExpertId* id = server->add_experts();
      id->set_layer(1);
      id->set_expert(e);
    }
  }
  v1::ExpertId* shared = config.mutable_placement(1)->add_experts();
  shared->set_layer(1);
  shared->set_expert(0);  // expert 0 on both servers
  config.set_capacity_factor(1.25);
  config.set_per_server_token_cap(64);
  config.set_overflow(v1::OVERFLOW_POLICY_DROP);
  config.set_fanout_timeout_seconds(10);
  config.set_health_probe_seconds(0.5);
  return config;
}

TEST(DispatchConfigTest, ReadsServersPlacementCapacityAndTimeouts) {
  absl::StatusOr<DispatchConfig> read = ReadDispatchConfig(TwoServers());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->expert_servers,
            (std::vector<std::string>{"127.0.0.1:5001", "127.0.0.1:5002"}));
  EXPECT_THAT(read->placement.Replicas(1, 0), ::testing::ElementsAre(0, 1));
  EXPECT_THAT(read->placement.Replicas(1, 1), ::testing::ElementsAre(1));
  EXPECT_THAT(read->placement.Replicas(1, 2), ::testing::ElementsAre(0));
  EXPECT_THAT(read->placement.Replicas(1, 3), ::testing::ElementsAre(1));
  EXPECT_EQ(read->placement.num_entries(), 5);
  EXPECT_EQ(read->capacity.capacity_factor, 1.25);
  EXPECT_EQ(read->capacity.per_server_token_cap, 64);
  EXPECT_EQ(read->capacity.policy, CapacityOptions::OverflowPolicy::kDrop);
  EXPECT_EQ(read->fanout_timeout_seconds, 10);
  EXPECT_EQ(read->health_probe_seconds, 0.5);
}

struct BadCase {
  const char* name;
  void (*spoil)(v1::DispatchConfig&);
  const char* field;
};

TEST(DispatchConfigTest, BadFieldsAreRefusedByName) {
  const BadCase cases[] = {
      {"no servers", [](v1::DispatchConfig& c) { c.clear_expert_servers(); },
       "expert_servers: empty"},
      {"empty address",
       [](v1::DispatchConfig& c) { c.set_expert_servers(1, ""); },
       "expert_servers[1]"},
      {"server id out of range",
       [](v1::DispatchConfig& c) { c.mutable_placement(1)->set_server(2); },
       "placement[1].server"},
      {"server listed twice",
       [](v1::DispatchConfig& c) { c.mutable_placement(1)->set_server(0); },
       "placement[1].server: 0 is listed twice"},
      {"negative expert",
       [](v1::DispatchConfig& c) {
         c.mutable_placement(0)->mutable_experts(1)->set_expert(-3);
       },
       "placement[0].experts[1]"},
      {"same expert twice on a server",
       [](v1::DispatchConfig& c) {
         c.mutable_placement(0)->mutable_experts(1)->set_expert(0);
       },
       "placement[0].experts[1]"},
      {"NaN capacity factor",
       [](v1::DispatchConfig& c) { c.set_capacity_factor(std::nan("")); },
       "capacity_factor"},
      {"negative capacity factor",
       [](v1::DispatchConfig& c) { c.set_capacity_factor(-1); },
       "capacity_factor"},
      {"negative server cap",
       [](v1::DispatchConfig& c) { c.set_per_server_token_cap(-1); },
       "per_server_token_cap"},
      {"unspecified overflow",
       [](v1::DispatchConfig& c) {
         c.set_overflow(v1::OVERFLOW_POLICY_UNSPECIFIED);
       },
       "overflow"},
      {"zero fan-out timeout",
       [](v1::DispatchConfig& c) { c.set_fanout_timeout_seconds(0); },
       "fanout_timeout_seconds"},
      {"infinite probe interval",
       [](v1::DispatchConfig& c) {
         c.set_health_probe_seconds(std::numeric_limits<double>::infinity());
       },
       "health_probe_seconds"},
  };
  for (const BadCase& c : cases) {
    v1::DispatchConfig config = TwoServers();
    c.spoil(config);
    absl::StatusOr<DispatchConfig> read = ReadDispatchConfig(config);
    ASSERT_FALSE(read.ok()) << c.name;
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name;
    EXPECT_THAT(read.status().message(), HasSubstr(c.field)) << c.name;
  }
}

}  // namespace
}  // namespace moe
