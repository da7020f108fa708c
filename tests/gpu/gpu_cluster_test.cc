// A cluster whose expert server runs on the GPU (`"device": "cuda:0"` in
// the topology) against the same cluster on the CPU, both started by the
// real launcher on 127.0.0.1 with the tiny-mixtral fixture: for every
// fixture case, the greedy tokens streamed through the gateway are the
// fixture's (every step's margin is at least 0.1, so a BF16 computation
// within the fixtures' 5e-2 tolerance keeps them) and the CPU cluster's.
// Skips with the reason where no GPU is usable.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/generate_client.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/launched_cluster.h"
#include "tests/reference_model.h"
#include "tests/test_util.h"

namespace moe::testing {
namespace {

// One expert server hosting every expert on `device`, one attention server.
std::string Topology(const std::string& device) {
  return R"({"name": "gpu-experts", "expert_servers": [
    {"name": "expert-0", "experts": "all", "device": ")" +
         device + R"("}], "attention_servers": 1})";
}

std::vector<std::vector<int32_t>> ClusterTokens(
    const std::string& topology_file, const std::vector<FixtureCase>& cases) {
  std::vector<std::vector<int32_t>> tokens;
  std::unique_ptr<LaunchedCluster> cluster =
      LaunchedCluster::Start(topology_file, FixtureDir("tiny-mixtral"));
  if (cluster == nullptr) return tokens;
  for (const FixtureCase& fc : cases) {
    StreamResult result = RunGenerate(
        cluster->gateway(),
        GreedyRequest(fc.prompt, static_cast<int>(fc.steps.size())));
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    tokens.push_back(result.tokens);
  }
  return tokens;
}

TEST(GpuClusterTest, GpuExpertServerEqualsTheCpuCluster) {
  MOE_SKIP_WITHOUT_GPU();
  absl::StatusOr<std::vector<FixtureCase>> cases =
      LoadFixtureCases(FixtureDir("tiny-mixtral"));
  ASSERT_TRUE(cases.ok()) << cases.status();
  TempDir dir;
  WriteFileOrDie(dir.Join("cpu.json"), Topology("cpu"));
  WriteFileOrDie(dir.Join("gpu.json"), Topology("cuda:0"));
  const std::vector<std::vector<int32_t>> cpu =
      ClusterTokens(dir.Join("cpu.json"), *cases);
  const std::vector<std::vector<int32_t>> gpu =
      ClusterTokens(dir.Join("gpu.json"), *cases);
  ASSERT_EQ(cpu.size(), cases->size());
  ASSERT_EQ(gpu.size(), cases->size());
  for (size_t c = 0; c < cases->size(); ++c) {
    SCOPED_TRACE(::testing::Message() << "case " << c);
    EXPECT_EQ(cpu[c], (*cases)[c].Tokens());
    EXPECT_EQ(gpu[c], cpu[c]);
  }
}

}  // namespace
}  // namespace moe::testing
