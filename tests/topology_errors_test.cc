// Topology errors: each names the JSON path (and the source file) of what
// is wrong.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/topology_test_util.h"
#include "tools/moe_cluster/topology.h"

namespace moe::cluster {
namespace {

using ::moe::cluster::testing::Error;
using ::moe::cluster::testing::With;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

TEST(TopologyErrorsTest, ErrorsNameTheSourceAndThePath) {
  absl::StatusOr<Topology> t = ParseTopology(
      R"({"expert_servers": 1, "attention_servers": 1,
          "router": {"capacity_factor": -1}})",
      "deploy/local/x.json");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(
      std::string(t.status().message()),
      StartsWith("topology deploy/local/x.json: router.capacity_factor: "
                 "must be a finite number >= 0"));
}

TEST(TopologyErrorsTest, UnknownKeysAreErrors) {
  EXPECT_THAT(Error(With(R"("expert_server": 1, "attention_servers": 1)")),
              HasSubstr("expert_server: unknown key"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
                            "router": {"capacity": 1})")),
              HasSubstr("router.capacity: unknown key"));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"experts": "all", "thread": 1}],
                            "attention_servers": 1)")),
              HasSubstr("expert_servers[0].thread: unknown key"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
                            "attention_servers": [{}, {"kv_cache": 1}])")),
              HasSubstr("attention_servers[1].kv_cache: unknown key"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
                            "gateway": {"port": 1})")),
              HasSubstr("gateway.port: unknown key"));
}

TEST(TopologyErrorsTest, WrongTypesAreErrors) {
  const std::string ok = R"("expert_servers": 1, "attention_servers": 1)";
  EXPECT_THAT(
      Error(With(ok + R"(, "router": {"capacity_factor": "0.5"})")),
      HasSubstr("router.capacity_factor: must be a finite number >= 0"));
  EXPECT_THAT(
      Error(With(ok + R"(, "router": {"overflow": "spill"})")),
      HasSubstr(R"(router.overflow: must be one of "reroute", "drop")"));
  EXPECT_THAT(Error(With(ok + R"(, "router": {"threads": 1.5})")),
              HasSubstr("router.threads: must be an integer"));
  EXPECT_THAT(Error(With(ok + R"(, "router": [])")),
              HasSubstr("router: must be an object"));
  EXPECT_THAT(Error(With(ok + R"(, "gateway": [])")),
              HasSubstr("gateway: must be an object"));
  EXPECT_THAT(Error(With(ok + R"(, "name": 3)")),
              HasSubstr("name: must be a string"));
  EXPECT_THAT(Error(With(R"("expert_servers": "4", "attention_servers": 1)")),
              HasSubstr("expert_servers: must be a server count"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": true)")),
              HasSubstr("attention_servers: must be a server count"));
  EXPECT_THAT(Error(With(R"("expert_servers": [3], "attention_servers": 1)")),
              HasSubstr("expert_servers[0]: must be an object"));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"experts": 3}],
                            "attention_servers": 1)")),
              HasSubstr("expert_servers[0].experts: must be a string"));
  EXPECT_THAT(Error("[1, 2]"), HasSubstr("top level: must be an object"));
}

TEST(TopologyErrorsTest, OutOfRangeValuesAreErrors) {
  const std::string ok = R"("expert_servers": 1, "attention_servers": 1)";
  // JSON has no NaN or infinity: the parser refuses them.
  EXPECT_THAT(Error(With(ok + R"(, "router": {"capacity_factor": 1e999})")),
              HasSubstr("not valid JSON: [json.exception.out_of_range.406] "
                        "number overflow parsing '1e999'"));
  EXPECT_THAT(Error(With(ok + R"(, "router": {"capacity_factor": NaN})")),
              HasSubstr("not valid JSON"));
  EXPECT_THAT(Error(With(ok + R"(, "router": {"capacity_factor": -0.25})")),
              HasSubstr("router.capacity_factor: must be a finite number >= 0, "
                        "got -0.25"));
  EXPECT_THAT(Error(With(ok + R"(, "router": {"fanout_timeout": 0})")),
              HasSubstr("router.fanout_timeout: must be a finite number > 0"));
  EXPECT_THAT(Error(With(ok + R"(, "gateway": {"max_in_flight": 0})")),
              HasSubstr("gateway.max_in_flight: must be an integer in [1, "));
  EXPECT_THAT(Error(With(ok + R"(, "gateway": {"max_in_flight": 2.5})")),
              HasSubstr("gateway.max_in_flight: must be an integer"));
  EXPECT_THAT(Error(With(ok + R"(, "gateway": {"drain_seconds": -1})")),
              HasSubstr("gateway.drain_seconds: must be a finite number >= 0"));
  EXPECT_THAT(
      Error(With(ok + R"(, "router": {"per_server_token_cap": -1})")),
      HasSubstr("router.per_server_token_cap: must be an integer in [0, "));
  EXPECT_THAT(Error(With(ok + R"(, "expert_threads": -1)")),
              HasSubstr("expert_threads: must be an integer in [0, "));
  EXPECT_THAT(Error(With(R"("expert_servers": 0, "attention_servers": 1)")),
              HasSubstr("expert_servers: must be a server count in [1, 256]"));
  EXPECT_THAT(Error(With(R"("expert_servers": [], "attention_servers": 1)")),
              HasSubstr("expert_servers: must list 1 to 256 servers"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": -2)")),
              HasSubstr("attention_servers: must be a server count"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
                            "attention_servers": [{"kv_cache_mb": 0}])")),
              HasSubstr("attention_servers[0].kv_cache_mb: must be an integer "
                        "in [1, "));
  EXPECT_THAT(
      Error(With(R"("expert_servers": 1,
                            "attention_servers": [{"max_running": 99999999999}])")),
      HasSubstr("attention_servers[0].max_running: must be an integer"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
                    "attention_servers": [{"prefill_chunk_tokens": -5}])")),
              HasSubstr("attention_servers[0].prefill_chunk_tokens"));
}

TEST(TopologyErrorsTest, RolesAreCheckedAndMixedConsistently) {
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
                            "attention_servers": [{"role": "mixed"}])")),
              HasSubstr("attention_servers[0].role: must be one of \"both\", "
                        "\"prefill\", \"decode\""));
  // Prefill servers need decode servers, and the reverse.
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
                            "attention_servers": [{"role": "prefill"}])")),
              HasSubstr("attention_servers: either every server has role "
                        "\"both\", or there are \"prefill\" and \"decode\" "
                        "servers and no \"both\" (got 0 both, 1 prefill, 0 "
                        "decode)"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
      "attention_servers": [{"role": "prefill"}, {"role": "decode"}, {}])")),
              HasSubstr("(got 1 both, 1 prefill, 1 decode)"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
      "attention_servers": [{"role": "decode", "micro_batches": 4}])")),
              HasSubstr("attention_servers[0].micro_batches"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
      "attention_servers": [{"role": "decode", "kv_lease_seconds": 0}])")),
              HasSubstr("attention_servers[0].kv_lease_seconds"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
      "attention_servers": [{"moe_dispatch": "peer"}])")),
              HasSubstr("attention_servers[0].moe_dispatch"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
      "pin_cpus": "0-x")")),
              HasSubstr("pin_cpus: CPU list \"0-x\""));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
      "pin_cpus": 3)")),
              HasSubstr("pin_cpus"));
  EXPECT_THAT(Error(With(R"("expert_servers": 2, "attention_servers": 1,
      "expert_pin_cpus": ["0"])")),
              HasSubstr("expert_pin_cpus: lists 1 CPU lists for 2 expert"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
      "expert_pin_cpus": ["0-x"])")),
              HasSubstr("expert_pin_cpus[0]: CPU list \"0-x\""));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"experts": "all"}],
      "attention_servers": 1, "expert_pin_cpus": ["0"])")),
              HasSubstr("expert_pin_cpus: only applies to expert_servers "
                        "given as a count"));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"experts": "all",
      "pin_cpus": "zero"}], "attention_servers": 1)")),
              HasSubstr("expert_servers[0].pin_cpus"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
      "router": {"rebalance_min_gain": 1.5})")),
              HasSubstr("router.rebalance_min_gain: must be in [0, 1)"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
      "router": {"rebalance_period_s": -1})")),
              HasSubstr("router.rebalance_period_s"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
      "router": {"expert_server_nodes": 0})")),
              HasSubstr("router.expert_server_nodes"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
      "attention_servers": [{"wire_dtype": "fp8"}])")),
              HasSubstr("attention_servers[0].wire_dtype"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1, "attention_servers": 1,
      "router": {"rebalance_window_s": -5})")),
              HasSubstr("router.rebalance_window_s"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1,
      "attention_servers": [{"prefix_cache": "yes"}])")),
              HasSubstr("attention_servers[0].prefix_cache: must be true or false"));
}

TEST(TopologyErrorsTest, ReplicasAreChecked) {
  EXPECT_THAT(Error(With(R"("expert_servers": 2, "replicas": 3,
                            "attention_servers": 1)")),
              HasSubstr("replicas: must be at most expert_servers (2), got 3"));
  EXPECT_THAT(Error(With(R"("expert_servers": 2, "replicas": 0,
                            "attention_servers": 1)")),
              HasSubstr("replicas: must be an integer in [1, "));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"experts": "all"}],
                            "replicas": 1, "attention_servers": 1)")),
              HasSubstr("replicas: only applies to automatic placement"));
}

TEST(TopologyErrorsTest, RequiredKeysAreRequired) {
  EXPECT_THAT(Error(With(R"("attention_servers": 1)")),
              HasSubstr("expert_servers: required"));
  EXPECT_THAT(Error(With(R"("expert_servers": 1)")),
              HasSubstr("attention_servers: required"));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"name": "e"}],
                            "attention_servers": 1)")),
              HasSubstr("expert_servers[0].experts: required"));
}

TEST(TopologyErrorsTest, ExplicitPlacementMustCoverTheModel) {
  // Expert 7 of layer 1 is on no server.
  EXPECT_THAT(
      Error(With(R"("expert_servers": [{"experts": "0:0-7,1:0-6"}],
                            "attention_servers": 1)")),
      AllOf(HasSubstr("expert_servers: "), HasSubstr("(layer 1, expert 7)")));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"experts": "0:0-7"},
                                               {"experts": "1:1-7"}],
                            "attention_servers": 1)")),
              HasSubstr("(layer 1, expert 0)"));
}

TEST(TopologyErrorsTest, ExplicitEntriesMustLieInsideTheModel) {
  const std::string att = R"(, "attention_servers": 1)";
  EXPECT_THAT(
      Error(With(R"("expert_servers": [{"experts": "all"},
                                      {"name": "x", "experts": "2:0"}])" +
                 att)),
      AllOf(HasSubstr("expert_servers[1].experts: server x lists (layer 2, "
                      "expert 0)"),
            HasSubstr("2 layers")));
  EXPECT_THAT(
      Error(With(R"("expert_servers": [{"experts": "all"},
                                      {"experts": "0:8"}])" +
                 att)),
      HasSubstr("(layer 0, expert 8) but the model has 8 experts per layer"));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"experts": "all"},
                                               {"experts": "1:0"}])" +
                         att),
                    "tiny-qwen2-moe"),
              HasSubstr("layer 1 is a dense (non-MoE) layer"));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"experts": "0:x"}])" + att)),
              HasSubstr("expert_servers[0].experts: entry \"0:x\""));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"experts": ""}])" + att)),
              HasSubstr("expert_servers[0].experts: empty list"));
}

TEST(TopologyErrorsTest, MoreServersThanExpertsIsAnError) {
  // tiny-mixtral has 2 x 8 = 16 (layer, expert) pairs.
  EXPECT_THAT(Error(With(R"("expert_servers": 17, "attention_servers": 1)")),
              HasSubstr("server expert-16 would host nothing"));
}

TEST(TopologyErrorsTest, ServerNamesAreUniqueAndFileSafe) {
  EXPECT_THAT(Error(With(R"("expert_servers": [{"name": "a", "experts": "all"}],
                            "attention_servers": [{"name": "a"}])")),
              HasSubstr("attention_servers[0].name: server name \"a\" is used "
                        "twice"));
  EXPECT_THAT(
      Error(With(R"("expert_servers": [{"name": "router", "experts": "all"}],
                    "attention_servers": 1)")),
      HasSubstr("expert_servers[0].name: server name \"router\""));
  EXPECT_THAT(
      Error(With(R"("expert_servers": [{"name": "a/b", "experts": "all"}],
                            "attention_servers": 1)")),
      HasSubstr("expert_servers[0].name: \"a/b\" may only hold"));
  EXPECT_THAT(Error(With(R"("expert_servers": [{"name": "", "experts": "all"}],
                            "attention_servers": 1)")),
              HasSubstr("expert_servers[0].name: must be 1 to 64"));
}

TEST(TopologyErrorsTest, MalformedJsonGivesThePosition) {
  absl::StatusOr<Topology> t =
      ParseTopology("{\n  \"expert_servers\": 1,\n  oops\n}", "bad.json");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()),
              AllOf(StartsWith("topology bad.json: not valid JSON"),
                    HasSubstr("line 3")));
}

TEST(TopologyErrorsTest, MissingFileIsNamed) {
  absl::StatusOr<Topology> t = LoadTopology("/nonexistent/topology.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("/nonexistent/topology.json"));
  EXPECT_THAT(std::string(t.status().message()),
              Not(HasSubstr("not valid JSON")));
}

}  // namespace
}  // namespace moe::cluster
