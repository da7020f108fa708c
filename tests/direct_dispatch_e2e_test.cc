// End-to-end: attention servers that dispatch their MoE steps to the expert
// servers themselves (moe_dispatch "direct"), with real processes on
// 127.0.0.1 started by the launcher.
//   * Greedy streams equal the single-process engine and the fixtures in
//     topologies with one server per slice and with every expert on two
//     servers; the router planned none of the batches (its stats stay 0)
//     and every expert server got slots from the attention server's own
//     dispatcher (its moe_router_dispatched_slots_total).
//   * Every MoE call went over shared memory (all servers share the host);
//     with "shared_memory": false every one went over the gRPC stream, with
//     the same tokens.
//   * With an expert server killed before the streams start, its groups go
//     to the live replica and the tokens are still the engine's; the
//     attention server marks the dead one down.
#include <signal.h>

#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster_checks.h"
#include "tests/launched_cluster.h"
#include "tests/reliability_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureDir;
using ::moe::testing::LaunchedCluster;

// deploy/local/<name>.json with every attention server set to dispatch
// directly, written into `dir`; `shared_memory` false keeps every MoE call
// on the gRPC stream.
std::string DirectTopology(const testing::TempDir& dir, const std::string& name,
                           bool shared_memory = true) {
  std::ifstream in(std::string(MOE_SOURCE_DIR) + "/deploy/local/" + name +
                   ".json");
  nlohmann::json topology = nlohmann::json::parse(in, nullptr, false);
  EXPECT_FALSE(topology.is_discarded()) << name;
  nlohmann::json& servers = topology["attention_servers"];
  if (servers.is_number()) {
    const int count = servers.get<int>();
    servers = nlohmann::json::array();
    for (int i = 0; i < count; ++i) servers.push_back(nlohmann::json::object());
  }
  for (nlohmann::json& server : servers) server["moe_dispatch"] = "direct";
  if (!shared_memory) topology["shared_memory"] = false;
  const std::string path = dir.Join(name + "-direct.json");
  testing::WriteFileOrDie(path, topology.dump(2));
  return path;
}

// moe_router_dispatched_slots_total of expert server `address`, as exported
// by `server`'s /metrics; -1 when unreadable.
double DispatchedSlots(const LaunchedCluster& cluster, const std::string& server,
                       const std::string& address) {
  const std::optional<std::string> text =
      testing::HttpGet(cluster.metrics_url(server));
  if (!text.has_value()) return -1;
  return testing::SeriesValue(*text, "moe_router_dispatched_slots_total",
                              absl::StrCat("server=\"", address, "\""));
}

// moe_router_expert_calls_total of expert server `address` over
// `transport`, as exported by `server`; -1 when unreadable.
double ExpertCalls(const LaunchedCluster& cluster, const std::string& server,
                   const std::string& address, const std::string& transport) {
  const std::optional<std::string> text =
      testing::HttpGet(cluster.metrics_url(server));
  if (!text.has_value()) return -1;
  return testing::SeriesValue(
      *text, "moe_router_expert_calls_total",
      absl::StrCat("server=\"", address, "\",transport=\"", transport, "\""));
}

int64_t RouterBatches(LaunchedCluster& cluster) {
  grpc::ClientContext context;
  v1::RouterStats stats;
  EXPECT_TRUE(
      cluster.router().GetStats(&context, v1::GetRouterStatsRequest(), &stats).ok());
  return stats.batches();
}

struct Case {
  std::string fixture;
  std::string topology;
};

class DirectDispatchE2eTest : public ::testing::TestWithParam<Case> {};

TEST_P(DirectDispatchE2eTest, GreedyStreamsEqualTheEngineWithoutTheRouterHop) {
  testing::TempDir dir;
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      DirectTopology(dir, GetParam().topology), FixtureDir(GetParam().fixture));
  ASSERT_NE(cluster, nullptr);
  testing::ExpectConcurrentStreamsEqualTheEngine(cluster->gateway(),
                                                 GetParam().fixture);
  EXPECT_TRUE(cluster->WaitForIdleKv());
  EXPECT_EQ(RouterBatches(*cluster), 0) << "the router planned MoE steps";
  for (const std::string& name : cluster->names()) {
    if (!absl::StartsWith(name, "expert-")) continue;
    EXPECT_GT(DispatchedSlots(*cluster, "attention-0", cluster->address(name)), 0)
        << name << " got no slots from attention-0";
    // Every server shares this host: every call went over shared memory
    // (attached before the attention server took its first request).
    EXPECT_GT(ExpertCalls(*cluster, "attention-0", cluster->address(name),
                          "shared_memory"),
              0)
        << name;
    EXPECT_EQ(ExpertCalls(*cluster, "attention-0", cluster->address(name),
                          "grpc_stream"),
              0)
        << name;
  }
}

TEST(DirectDispatchTransportTest, TheGrpcStreamGivesTheSameTokensWithoutSharedMemory) {
  testing::TempDir dir;
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      DirectTopology(dir, "four-slices", /*shared_memory=*/false),
      FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  testing::ExpectConcurrentStreamsEqualTheEngine(cluster->gateway(),
                                                 "tiny-mixtral");
  for (const std::string& name : cluster->names()) {
    if (!absl::StartsWith(name, "expert-")) continue;
    EXPECT_GT(ExpertCalls(*cluster, "attention-0", cluster->address(name),
                          "grpc_stream"),
              0)
        << name;
    EXPECT_EQ(ExpertCalls(*cluster, "attention-0", cluster->address(name),
                          "shared_memory"),
              0)
        << name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Topologies, DirectDispatchE2eTest,
    ::testing::Values(Case{"tiny-mixtral", "four-slices"},
                      Case{"tiny-mixtral", "replicated"},
                      Case{"tiny-qwen2-moe", "four-slices"}),
    [](const auto& info) {
      std::string name = info.param.fixture + "_" + info.param.topology;
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      return name;
    });

TEST(DirectDispatchFaultTest, DeadExpertServerIsRoutedAroundToItsReplica) {
  testing::TempDir dir;
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      DirectTopology(dir, "replicated"), FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const std::string victim = cluster->address("expert-1");
  ASSERT_EQ(kill(cluster->pid("expert-1"), SIGKILL), 0);
  testing::ExpectConcurrentStreamsEqualTheEngine(cluster->gateway(),
                                                 "tiny-mixtral");
  const std::optional<std::string> text =
      testing::HttpGet(cluster->metrics_url("attention-0"));
  ASSERT_TRUE(text.has_value());
  EXPECT_EQ(testing::SeriesValue(*text, "moe_router_expert_server_up",
                                 absl::StrCat("server=\"", victim, "\"")),
            0.0);
  EXPECT_GT(DispatchedSlots(*cluster, "attention-0", cluster->address("expert-0")),
            0);
}

}  // namespace
}  // namespace moe
