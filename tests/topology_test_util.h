// Helpers shared by the topology tests.
#ifndef MOE_TESTS_TOPOLOGY_TEST_UTIL_H_
#define MOE_TESTS_TOPOLOGY_TEST_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tools/moe_cluster/topology.h"

namespace moe::cluster::testing {

inline ModelConfig Fixture(const std::string& name) {
  absl::StatusOr<ModelConfig> config =
      LoadModelConfig(moe::testing::FixtureDir(name));
  EXPECT_TRUE(config.ok()) << config.status();
  return config.value_or(ModelConfig());
}

inline absl::StatusOr<ClusterPlan> ParseAndResolve(const std::string& json,
                                                   const std::string& fixture) {
  absl::StatusOr<Topology> topology = ParseTopology(json, "t.json");
  if (!topology.ok()) return topology.status();
  return ResolveTopology(*topology, Fixture(fixture));
}

// The error message of parsing + resolving `json` against tiny-mixtral.
inline std::string Error(const std::string& json,
                         const std::string& fixture = "tiny-mixtral") {
  absl::StatusOr<ClusterPlan> plan = ParseAndResolve(json, fixture);
  EXPECT_FALSE(plan.ok()) << json;
  if (plan.ok()) return "";
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(plan.status().message());
}

// The JSON object with these members: With(R"("a": 1)") is {"a": 1}.
inline std::string With(const std::string& members) {
  return absl::StrCat("{", members, "}");
}

}  // namespace moe::cluster::testing

#endif  // MOE_TESTS_TOPOLOGY_TEST_UTIL_H_
