// The NCCL data plane on real GPUs (core/nccl_data_plane.h): a two-rank
// exchange in one process (the router's side on cuda:0, the expert
// server's on cuda:1) computes what the CUDA expert backend computes over
// gRPC, bit for bit, and what the CPU FFN computes within BF16 tolerance;
// deadlines abort; and a launched cluster whose router sends the rows over
// NCCL generates the tokens of the same cluster over gRPC, of the CPU
// cluster and of the fixture. NCCL refuses two ranks of
// one communicator on one device, so the exchanges need two GPUs; on
// machines with fewer every test skips, saying why.
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/backends.h"
#include "core/cuda/cuda_expert_ffn.h"
#include "core/expert_ffn.h"
#include "core/model_weights.h"
#include "core/nccl_data_plane.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/generate_client.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/launched_cluster.h"
#include "tests/reference_model.h"
#include "tests/reliability_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

constexpr char kFixture[] = "tiny-mixtral";

// Skips unless NCCL is built in and two CUDA devices are visible.
#define MOE_SKIP_WITHOUT_NCCL_PAIR()                                      \
  do {                                                                    \
    if (!::moe::NcclBuilt()) {                                            \
      GTEST_SKIP() << "needs NCCL: "                                      \
                   << ::moe::NewNcclUniqueId().status().message();        \
    }                                                                     \
    const size_t moe_gpus_ = ::moe::ProbeGpus().devices.size();           \
    if (moe_gpus_ < 2) {                                                  \
      GTEST_SKIP() << "needs 2 CUDA GPUs (NCCL refuses two ranks of one " \
                      "communicator on one device), found "               \
                   << moe_gpus_;                                          \
    }                                                                     \
  } while (false)

DeviceSpec Cuda(int ordinal) { return {DeviceSpec::Kind::kCuda, ordinal}; }

// Joins ranks 0 (cuda:0, "the router") and 1 (cuda:1, "the expert
// server") of one communicator, on two threads as two processes would.
std::pair<std::unique_ptr<NcclCommunicator>, std::unique_ptr<NcclCommunicator>>
JoinPair() {
  absl::StatusOr<std::string> id = NewNcclUniqueId();
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return {};
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> ranks[2] = {
      absl::UnknownError(""), absl::UnknownError("")};
  std::thread threads[2];
  for (int rank = 0; rank < 2; ++rank) {
    threads[rank] = std::thread([&, rank] {
      NcclJoinOptions options;
      options.unique_id = *id;
      options.nranks = 2;
      options.rank = rank;
      options.device = Cuda(rank);
      options.peer = rank == 0 ? "the expert side" : "the router side";
      options.timeout = absl::Seconds(60);
      ranks[rank] = JoinNcclCommunicator(options);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(ranks[0].ok()) << ranks[0].status();
  EXPECT_TRUE(ranks[1].ok()) << ranks[1].status();
  if (!ranks[0].ok() || !ranks[1].ok()) return {};
  return {*std::move(ranks[0]), *std::move(ranks[1])};
}

class CudaNcclExchangeTest : public ::testing::Test {
 protected:
  // The fixture's experts, on cuda:1 as an expert server would hold them.
  void LoadExperts() {
    absl::StatusOr<ModelWeights> weights = LoadModelWeightsFromDir(
        testing::FixtureDir(kFixture), WeightSelection::Full(),
        /*populate=*/true);
    ASSERT_TRUE(weights.ok()) << weights.status();
    weights_ = *std::move(weights);
    hidden_ = weights_.config.hidden_size;
    std::vector<const FfnWeights*> hosted;
    for (const LayerWeights& layer : weights_.layers) {
      for (const auto& [e, w] : layer.experts) hosted.push_back(&w);
    }
    absl::StatusOr<std::unique_ptr<cuda::CudaExpertFfn>> ffn =
        cuda::CudaExpertFfn::Create(1, hosted);
    ASSERT_TRUE(ffn.ok()) << ffn.status();
    ffn_ = *std::move(ffn);
  }

  const FfnWeights* Expert(int layer, int expert) const {
    return &weights_.layers[layer].experts.at(expert);
  }

  ModelWeights weights_;
  int64_t hidden_ = 0;
  std::unique_ptr<cuda::CudaExpertFfn> ffn_;
};

TEST_F(CudaNcclExchangeTest, ExchangesEqualTheCudaBackendAndTheCpuFfn) {
  MOE_SKIP_WITHOUT_GPU();
  MOE_SKIP_WITHOUT_NCCL_PAIR();
  LoadExperts();
  // Not a structured binding: Clang 14 cannot capture those in lambdas.
  auto pair = JoinPair();
  std::unique_ptr<NcclCommunicator>& router = pair.first;
  std::unique_ptr<NcclCommunicator>& expert = pair.second;
  ASSERT_NE(router, nullptr);
  ASSERT_NE(expert, nullptr);

  std::mt19937 rng(7);
  std::normal_distribution<float> dist;
  // Several exchanges in a row on one link (the ordering contract), of
  // different sizes, with an empty group among them.
  const std::vector<std::vector<std::pair<std::pair<int, int>, int>>> calls = {
      {{{0, 1}, 5}, {{1, 3}, 0}, {{0, 7}, 3}},
      {{{1, 0}, 1}},
      {{{0, 2}, 17}, {{0, 2}, 4}, {{1, 6}, 9}, {{1, 5}, 2}},
  };
  for (size_t c = 0; c < calls.size(); ++c) {
    std::vector<std::vector<float>> x, out, reference, cpu;
    std::vector<FfnGroup> groups, reference_groups, cpu_groups;
    for (const auto& [id, tokens] : calls[c]) {
      x.emplace_back(tokens * hidden_);
      for (float& v : x.back()) v = dist(rng);
      out.emplace_back(tokens * hidden_, -1.0f);
      reference.emplace_back(tokens * hidden_);
      cpu.emplace_back(tokens * hidden_);
    }
    std::vector<absl::Span<const float>> inputs;
    std::vector<absl::Span<float>> outputs;
    for (size_t g = 0; g < calls[c].size(); ++g) {
      const FfnWeights* w =
          Expert(calls[c][g].first.first, calls[c][g].first.second);
      const int64_t tokens = calls[c][g].second;
      groups.push_back({w, nullptr, tokens, nullptr});
      // The host paths are given what the engine gives them: no empty
      // groups.
      if (tokens > 0) {
        reference_groups.push_back(
            {w, x[g].data(), tokens, reference[g].data()});
        cpu_groups.push_back({w, x[g].data(), tokens, cpu[g].data()});
      }
      inputs.emplace_back(x[g]);
      outputs.emplace_back(out[g]);
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    absl::Status served;
    std::thread server(
        [&] { served = expert->ServeExperts(0, *ffn_, groups, deadline, {}); });
    const absl::Status exchanged =
        router->Exchange(1, inputs, outputs, deadline, {});
    server.join();
    ASSERT_TRUE(exchanged.ok()) << "call " << c << ": " << exchanged;
    ASSERT_TRUE(served.ok()) << "call " << c << ": " << served;

    // The CUDA backend's own host path rounds to BF16 the same way.
    ASSERT_TRUE(ffn_->Run(reference_groups).ok());
    GroupedFfnRunner().Run(cpu_groups, nullptr);
    for (size_t g = 0; g < calls[c].size(); ++g) {
      EXPECT_EQ(out[g], reference[g]) << "call " << c << " group " << g;
      for (size_t i = 0; i < out[g].size(); ++i) {
        ASSERT_NEAR(out[g][i], cpu[g][i], 0.03 + 0.03 * std::fabs(cpu[g][i]))
            << "call " << c << " group " << g << " value " << i;
      }
    }
  }
  EXPECT_FALSE(router->aborted());
  EXPECT_FALSE(expert->aborted());
}

TEST_F(CudaNcclExchangeTest, AMissedDeadlineAbortsTheLink) {
  MOE_SKIP_WITHOUT_GPU();
  MOE_SKIP_WITHOUT_NCCL_PAIR();
  LoadExperts();
  auto [router, expert] = JoinPair();
  ASSERT_NE(router, nullptr);
  // The expert side never serves: the router's send waits for a receive
  // that does not come.
  std::vector<float> x(4 * hidden_, 1.0f), y(4 * hidden_);
  const absl::Span<const float> in[] = {x};
  const absl::Span<float> out[] = {absl::Span<float>(y)};
  const absl::Time start = absl::Now();
  absl::Status status =
      router->Exchange(1, in, out, start + absl::Milliseconds(500), {});
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("the expert side did not take part before the "
                        "deadline"));
  EXPECT_TRUE(router->aborted());
  status = router->Exchange(1, in, out, absl::Now() + absl::Seconds(5), {});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("aborted earlier"));

  // The expert side refuses a backend that is not the CUDA one before it
  // posts anything (so it does not wait at all).
  CpuExpertFfn cpu(nullptr);
  const FfnGroup group{Expert(0, 1), nullptr, 2, nullptr};
  status = expert->ServeExperts(0, cpu, absl::MakeConstSpan(&group, 1),
                                absl::Now() + absl::Seconds(30), {});
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("needs the CUDA expert backend"));
}

TEST(CudaNcclJoinTest, AJoinWhosePeerNeverComesTimesOut) {
  MOE_SKIP_WITHOUT_GPU();
  if (!NcclBuilt()) {
    GTEST_SKIP() << "needs NCCL: " << NewNcclUniqueId().status().message();
  }
  absl::StatusOr<std::string> id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  NcclJoinOptions options;
  options.unique_id = *id;
  options.device = Cuda(0);
  options.peer = "expert server 9";
  options.timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> joined =
      JoinNcclCommunicator(options);
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  ASSERT_FALSE(joined.ok());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(joined.status().message()),
              HasSubstr("expert server 9 did not take part"));
}

// ---------------------------------------------------------------------------
// Launched clusters.

// Greedy tokens of every fixture case through `cluster`'s gateway (every
// step's margin is at least 0.1, so BF16 experts keep the fixture's tokens).
std::vector<std::vector<int32_t>> GreedyTokens(
    testing::LaunchedCluster& cluster,
    const std::vector<testing::FixtureCase>& cases) {
  std::vector<std::vector<int32_t>> out;
  for (const testing::FixtureCase& fc : cases) {
    testing::StreamResult r = testing::RunGenerate(
        cluster.gateway(),
        testing::GreedyRequest(fc.prompt, static_cast<int>(fc.steps.size())));
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    out.push_back(r.tokens);
  }
  return out;
}

std::string WriteTopology(const testing::TempDir& dir, const std::string& name,
                          const std::string& json) {
  const std::string path = dir.Join(name + ".json");
  testing::WriteFileOrDie(path, json);
  return path;
}

TEST(CudaNcclClusterTest, TheNcclClusterGeneratesTheCpuClustersTokens) {
  MOE_SKIP_WITHOUT_GPU();
  MOE_SKIP_WITHOUT_NCCL_PAIR();
  absl::StatusOr<std::vector<testing::FixtureCase>> cases =
      testing::LoadFixtureCases(testing::FixtureDir(kFixture));
  ASSERT_TRUE(cases.ok()) << cases.status();
  testing::TempDir dir;
  const std::string model = testing::FixtureDir(kFixture);
  // Two expert servers on cuda:1 (two links, used concurrently), the router
  // on cuda:0.
  const std::string nccl = WriteTopology(dir, "nccl", R"({
      "expert_servers": 2, "expert_device": "cuda:1",
      "data_plane": {"kind": "nccl", "router_device": "cuda:0"},
      "attention_servers": 1})");
  const std::string grpc_gpu = WriteTopology(dir, "grpc-gpu", R"({
      "expert_servers": 2, "expert_device": "cuda:1",
      "attention_servers": 1})");

  std::vector<std::vector<int32_t>> over_nccl, over_grpc, on_cpu;
  {
    std::unique_ptr<testing::LaunchedCluster> cluster =
        testing::LaunchedCluster::Start(nccl, model);
    ASSERT_NE(cluster, nullptr);
    over_nccl = GreedyTokens(*cluster, *cases);
    // Every row went over NCCL: no link broke.
    std::optional<std::string> metrics =
        testing::HttpGet(cluster->metrics_url("router"));
    ASSERT_TRUE(metrics.has_value());
    EXPECT_EQ(
        testing::SeriesValue(*metrics, "moe_router_data_plane_fallbacks_total"),
        0.0);
    EXPECT_GT(
        testing::SeriesValue(*metrics, "moe_router_dispatched_slots_total"),
        0.0);
  }
  {
    std::unique_ptr<testing::LaunchedCluster> cluster =
        testing::LaunchedCluster::Start(grpc_gpu, model);
    ASSERT_NE(cluster, nullptr);
    over_grpc = GreedyTokens(*cluster, *cases);
  }
  {
    std::unique_ptr<testing::LaunchedCluster> cluster =
        testing::LaunchedCluster::Start("deploy/local/demo.json", model);
    ASSERT_NE(cluster, nullptr);
    on_cpu = GreedyTokens(*cluster, *cases);
  }
  ASSERT_EQ(over_nccl.size(), cases->size());
  ASSERT_EQ(over_grpc.size(), cases->size());
  ASSERT_EQ(on_cpu.size(), cases->size());
  for (size_t c = 0; c < cases->size(); ++c) {
    SCOPED_TRACE(::testing::Message() << "case " << c);
    // The same GPU experts over gRPC round to BF16 the same way.
    EXPECT_EQ(over_nccl[c], over_grpc[c]);
    EXPECT_EQ(over_nccl[c], on_cpu[c]);
    EXPECT_EQ(over_nccl[c], (*cases)[c].Tokens());
  }
}

}  // namespace
}  // namespace moe
