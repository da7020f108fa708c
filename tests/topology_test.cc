// Topology files: the deploy/local files, placement resolution and the
// server command lines they turn into (errors: topology_errors_test.cc).
#include "tools/moe_cluster/topology.h"

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/topology_test_util.h"
#include "tools/moe_cluster/server_args.h"

namespace moe::cluster {
namespace {

using ::moe::cluster::testing::Error;
using ::moe::cluster::testing::Fixture;
using ::moe::cluster::testing::ParseAndResolve;
using ::moe::cluster::testing::With;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string DeployDir() {
  return std::string(MOE_SOURCE_DIR) + "/deploy/local";
}

// How many servers host each (layer, expert).
std::map<std::pair<int, int>, int> HostCounts(const ClusterPlan& plan) {
  std::map<std::pair<int, int>, int> counts;
  for (const ExpertServerPlan& s : plan.expert_servers) {
    for (const auto& le : s.experts) ++counts[le];
  }
  return counts;
}

std::set<std::pair<int, int>> MoeExperts(const ModelConfig& config) {
  std::set<std::pair<int, int>> all;
  for (int l = 0; l < config.num_layers; ++l) {
    if (!config.IsMoeLayer(l)) continue;
    for (int e = 0; e < config.num_experts; ++e) all.emplace(l, e);
  }
  return all;
}

std::vector<std::string> ExpertArgs(const ClusterPlan& plan) {
  std::vector<std::string> out;
  for (const ServerLaunch& l : PlanLaunches(plan, "/m")) {
    if (l.stage == Stage::kExpertServers) out.push_back(l.args[1]);
  }
  return out;
}

TEST(TopologyTest, EveryDeployFileResolvesAgainstBothFixtures) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(DeployDir())) {
    if (entry.path().extension() != ".json") continue;
    ++files;
    const std::string path = entry.path().string();
    absl::StatusOr<Topology> topology = LoadTopology(path);
    ASSERT_TRUE(topology.ok()) << topology.status();
    EXPECT_EQ(topology->name, entry.path().stem().string());
    for (const char* fixture : {"tiny-mixtral", "tiny-qwen2-moe"}) {
      const ModelConfig config = Fixture(fixture);
      absl::StatusOr<ClusterPlan> plan = ResolveTopology(*topology, config);
      ASSERT_TRUE(plan.ok())
          << path << " / " << fixture << ": " << plan.status();
      std::map<std::pair<int, int>, int> counts = HostCounts(*plan);
      EXPECT_EQ(counts.size(), MoeExperts(config).size()) << path;
      for (const auto& [le, n] : counts) {
        EXPECT_EQ(n, topology->automatic_placement ? topology->replicas : 1)
            << path << " (" << le.first << ", " << le.second << ")";
      }
      EXPECT_FALSE(plan->attention_servers.empty());
    }
  }
  EXPECT_GE(files, 7);
}

TEST(TopologyTest, DeployFilesHaveTheDocumentedShapes) {
  auto load = [](const std::string& name) {
    absl::StatusOr<Topology> t = LoadTopology(DeployDir() + "/" + name);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.value_or(Topology());
  };
  const Topology demo = load("demo.json");
  EXPECT_TRUE(demo.automatic_placement);
  EXPECT_EQ(demo.expert_servers.size(), 2u);
  EXPECT_EQ(demo.attention_servers.size(), 1u);
  const Topology one = load("one-expert-server.json");
  EXPECT_FALSE(one.automatic_placement);
  ASSERT_EQ(one.expert_servers.size(), 1u);
  EXPECT_TRUE(one.expert_servers[0].experts.all);
  const Topology four = load("four-slices.json");
  EXPECT_EQ(four.expert_servers.size(), 4u);
  EXPECT_EQ(four.replicas, 1);
  const Topology replicated = load("replicated.json");
  EXPECT_EQ(replicated.expert_servers.size(), 2u);
  EXPECT_EQ(replicated.replicas, 2);
  const Topology overflow = load("overflow.json");
  EXPECT_EQ(overflow.expert_servers.size(), 1u);
  EXPECT_EQ(overflow.router.capacity_factor, 0.5);
  EXPECT_EQ(overflow.router.overflow, "reroute");
  const Topology drop = load("overflow-drop.json");
  EXPECT_EQ(drop.router.capacity_factor, 0.5);
  EXPECT_EQ(drop.router.overflow, "drop");
  const Topology bench = load("bench.json");
  EXPECT_EQ(bench.expert_servers.size(), 2u);
  EXPECT_EQ(bench.attention_servers.size(), 1u);
}

TEST(TopologyTest, ExpertsArgumentsAreFormattedCompactly) {
  const std::string tail = R"(, "attention_servers": 1)";
  absl::StatusOr<ClusterPlan> four =
      ParseAndResolve(With(R"("expert_servers": 4)" + tail), "tiny-mixtral");
  ASSERT_TRUE(four.ok()) << four.status();
  // Pair g (layer-major) goes to server g mod 4.
  EXPECT_THAT(
      ExpertArgs(*four),
      ElementsAre("--experts=0:0,0:4,1:0,1:4", "--experts=0:1,0:5,1:1,1:5",
                  "--experts=0:2,0:6,1:2,1:6", "--experts=0:3,0:7,1:3,1:7"));
  absl::StatusOr<ClusterPlan> replicated = ParseAndResolve(
      With(R"("expert_servers": 2, "replicas": 2)" + tail), "tiny-qwen2-moe");
  ASSERT_TRUE(replicated.ok()) << replicated.status();
  // Layer 1 of tiny-qwen2-moe is dense.
  EXPECT_THAT(ExpertArgs(*replicated),
              ElementsAre("--experts=0:0-7,2:0-7", "--experts=0:0-7,2:0-7"));
  absl::StatusOr<ClusterPlan> all = ParseAndResolve(
      With(R"("expert_servers": [{"experts": "all"}])" + tail), "tiny-mixtral");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(ExpertArgs(*all), ElementsAre("--experts=0:0-7,1:0-7"));
  absl::StatusOr<ClusterPlan> split = ParseAndResolve(
      With(R"("expert_servers": [{"name": "low", "experts": "0:0-3, 1:0-3"},
                                 {"name": "high", "experts": "1:7,0:4-7,1:4,1:5,1:6"}])" +
           tail),
      "tiny-mixtral");
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_THAT(ExpertArgs(*split),
              ElementsAre("--experts=0:0-3,1:0-3", "--experts=0:4-7,1:4-7"));
  EXPECT_EQ(split->expert_servers[1].name, "high");
  // A spare hosts nothing until a rebalance gives it experts.
  absl::StatusOr<ClusterPlan> spare = ParseAndResolve(
      With(R"("expert_servers": [{"experts": "all"}, {"experts": "none"}])" +
           tail),
      "tiny-mixtral");
  ASSERT_TRUE(spare.ok()) << spare.status();
  EXPECT_THAT(ExpertArgs(*spare),
              ElementsAre("--experts=0:0-7,1:0-7", "--experts=none"));
  EXPECT_TRUE(spare->expert_servers[1].spare);
}

TEST(TopologyTest, AutomaticPlacementGivesEachExpertReplicasDistinctServers) {
  for (int servers = 1; servers <= 5; ++servers) {
    for (int replicas = 1; replicas <= servers; ++replicas) {
      for (const char* fixture : {"tiny-mixtral", "tiny-qwen2-moe"}) {
        absl::StatusOr<ClusterPlan> plan =
            ParseAndResolve(With(absl::StrCat(R"("expert_servers": )", servers,
                                              R"(, "replicas": )", replicas,
                                              R"(, "attention_servers": 1)")),
                            fixture);
        ASSERT_TRUE(plan.ok()) << plan.status();
        ASSERT_EQ(plan->expert_servers.size(), static_cast<size_t>(servers));
        std::map<std::pair<int, int>, int> counts = HostCounts(*plan);
        EXPECT_EQ(counts.size(), MoeExperts(Fixture(fixture)).size());
        // Experts are sets per server, so a count of `replicas` means
        // `replicas` distinct servers.
        for (const auto& [le, n] : counts) EXPECT_EQ(n, replicas);
        for (int s = 0; s < servers; ++s) {
          EXPECT_EQ(plan->expert_servers[s].name, absl::StrCat("expert-", s));
        }
      }
    }
  }
}

TEST(TopologyTest, DefaultsAndSettingsBecomeOnlyTheGivenFlags) {
  absl::StatusOr<ClusterPlan> plan =
      ParseAndResolve(With(R"("expert_servers": 2, "expert_threads": 3,
              "pin_cpus": "all",
              "router": {"capacity_factor": 0.5, "overflow": "drop",
                         "per_server_token_cap": 7, "fanout_timeout": 2.5,
                         "threads": 2, "rebalance_period_s": 30,
                         "rebalance_min_gain": 0.25,
                         "rebalance_slots_per_server": 5,
                         "rebalance_window_s": 120,
                         "expert_server_nodes": 2},
              "attention_servers": [{"kv_cache_mb": 128, "max_running": 8,
                                     "prefill_chunk_tokens": 64, "threads": 1},
                                    {"name": "att-b", "role": "both",
                                     "moe_dispatch": "direct",
                                     "wire_dtype": "bf16"}],
              "gateway": {"max_in_flight": 16, "drain_seconds": 90})"),
                      "tiny-mixtral");
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<ServerLaunch> launches = PlanLaunches(*plan, "/models/m");
  ASSERT_EQ(launches.size(), 6u);
  EXPECT_EQ(launches[0].binary, "expert_server");
  EXPECT_THAT(
      launches[0].args,
      ElementsAre("--model=/models/m",
                  "--experts=0:0,0:2,0:4,0:6,1:0,1:2,1:4,1:6", "--threads=3",
                  "--pin_cpus=all"));
  EXPECT_EQ(launches[0].detail, "experts 0:0,0:2,0:4,0:6,1:0,1:2,1:4,1:6");
  EXPECT_EQ(launches[2].name, "router");
  EXPECT_THAT(launches[2].args,
              ElementsAre("--model=/models/m", "--capacity_factor=0.5",
                          "--overflow=drop", "--per_server_token_cap=7",
                          "--fanout_timeout=2.5", "--threads=2",
                          "--rebalance_period_s=30",
                          "--rebalance_min_gain=0.25",
                          "--rebalance_slots_per_server=5",
                          "--rebalance_window_s=120",
                          "--expert_server_nodes=2"));
  EXPECT_THAT(WithDependencies(launches[2], {{"127.0.0.1:1", ""}, {"127.0.0.1:2", ""}}),
              Contains("--expert_servers=127.0.0.1:1,127.0.0.1:2"));
  EXPECT_EQ(launches[3].name, "attention-0");
  EXPECT_THAT(launches[3].args,
              ElementsAre("--model=/models/m", "--role=both", "--threads=1",
                          "--kv_cache_mb=128", "--prefill_chunk_tokens=64",
                          "--max_running=8", "--pin_cpus=all"));
  EXPECT_THAT(WithDependencies(launches[3], {{"127.0.0.1:9", ""}}),
              Contains("--router=127.0.0.1:9"));
  EXPECT_EQ(launches[4].name, "att-b");
  EXPECT_THAT(launches[4].args,
              ElementsAre("--model=/models/m", "--role=both",
                          "--moe_dispatch=direct", "--wire_dtype=bf16",
                          "--pin_cpus=all"));
  EXPECT_EQ(launches[5].name, "gateway");
  EXPECT_EQ(launches[5].stage, Stage::kGateway);
  EXPECT_THAT(launches[5].args,
              ElementsAre("--model=/models/m", "--max_in_flight=16",
                          "--drain_seconds=90"));
  EXPECT_THAT(WithDependencies(launches[5], {{"a:1", "both"}, {"b:2", "both"}}),
              ElementsAre("--model=/models/m", "--max_in_flight=16",
                          "--drain_seconds=90", "--attention_servers=a:1,b:2"));

  // Expert servers pinned one by one: a counted section's list, or a
  // listed server's own key, which overrides the top-level one.
  absl::StatusOr<ClusterPlan> pinned = ParseAndResolve(
      With(R"("expert_servers": 2, "attention_servers": 1,
              "expert_pin_cpus": ["1", "0"], "pin_cpus": "all")"),
      "tiny-mixtral");
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  const std::vector<ServerLaunch> pinned_launches = PlanLaunches(*pinned, "/m");
  EXPECT_THAT(pinned_launches[0].args, Contains("--pin_cpus=1"));
  EXPECT_THAT(pinned_launches[1].args, Contains("--pin_cpus=0"));
  absl::StatusOr<ClusterPlan> listed = ParseAndResolve(
      With(R"("expert_servers": [{"experts": "all", "pin_cpus": "1"}],
              "attention_servers": 1)"),
      "tiny-mixtral");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(PlanLaunches(*listed, "/m")[0].args, Contains("--pin_cpus=1"));

  absl::StatusOr<ClusterPlan> bare = ParseAndResolve(
      With(R"("expert_servers": 1, "attention_servers": 1)"), "tiny-mixtral");
  ASSERT_TRUE(bare.ok()) << bare.status();
  std::vector<ServerLaunch> plain = PlanLaunches(*bare, "/m");
  EXPECT_THAT(plain[0].args,
              ElementsAre("--model=/m", "--experts=0:0-7,1:0-7"));
  EXPECT_THAT(plain[1].args, ElementsAre("--model=/m"));
  EXPECT_THAT(plain[2].args, ElementsAre("--model=/m", "--role=both"));
  EXPECT_THAT(plain[3].args, ElementsAre("--model=/m"));  // the gateway
}

TEST(TopologyTest, SharedMemoryReachesEveryServerThatUsesIt) {
  for (const bool on : {false, true}) {
    absl::StatusOr<ClusterPlan> plan = ParseAndResolve(
        With(absl::StrCat(R"("expert_servers": 1, "attention_servers": 1,
                "shared_memory": )", on ? "true" : "false")),
        "tiny-mixtral");
    ASSERT_TRUE(plan.ok()) << plan.status();
    const std::string flag = on ? "--shared_memory=true" : "--shared_memory=false";
    std::vector<ServerLaunch> launches = PlanLaunches(*plan, "/m");
    ASSERT_EQ(launches.size(), 4u);
    EXPECT_THAT(launches[0].args, Contains(flag));  // the expert server
    EXPECT_THAT(launches[1].args, Contains(flag));  // the router
    EXPECT_THAT(launches[2].args, Contains(flag));  // the attention server
    EXPECT_THAT(launches[3].args, Not(Contains(flag)));  // the gateway
  }
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
      "shared_memory": "yes")")),
              HasSubstr("shared_memory"));
}

TEST(TopologyTest, NumbersAreWrittenShortestRoundTrip) {
  EXPECT_EQ(FormatNumber(0.5), "0.5");
  EXPECT_EQ(FormatNumber(10), "10");
  EXPECT_EQ(FormatNumber(0.1), "0.1");
  EXPECT_EQ(FormatNumber(1.0 / 3), "0.3333333333333333");
}

TEST(TopologyTest, NameDefaultsToTheFileStem) {
  absl::StatusOr<Topology> t =
      ParseTopology(R"({"expert_servers": 1, "attention_servers": 1})",
                    "dir/my-cluster.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->name, "my-cluster");
  t = ParseTopology(
      R"({"name": "x", "expert_servers": 1, "attention_servers": 2})",
      "y.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->name, "x");
  ASSERT_EQ(t->attention_servers.size(), 2u);
  EXPECT_EQ(t->attention_servers[1].name, "attention-1");
}

}  // namespace
}  // namespace moe::cluster
