// End-to-end: whole clusters of real processes on 127.0.0.1, started by the
// real launcher from the topologies in deploy/local.
//   * Greedy streams equal the single-process engine and the fixtures, for
//     both fixtures in three topologies (one expert server; four servers
//     each with a slice; every expert on two servers), eight concurrent
//     streams of different lengths.
//   * Under capacity limits, the router's rerouted and dropped slots equal a
//     plain reference computation of the same policy, and the outputs are
//     the reference's and identical run to run.
//   * Invalid requests get INVALID_ARGUMENT naming the field, and the
//     cluster serves the next valid request.
#include <map>
#include <ostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/checkpoint.h"
#include "core/kv_cache.h"
#include "core/model_weights.h"
#include "core/sequence_state.h"
#include "core/thread_pool.h"
#include "core/transformer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster_checks.h"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/reference_capacity.h"
#include "tests/reference_model.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureDir;
using ::moe::testing::LaunchedCluster;
using ::moe::testing::StreamResult;

struct TopologyCase {
  std::string fixture;
  std::string topology;  // file in deploy/local
};
void PrintTo(const TopologyCase& c, std::ostream* os) {
  *os << c.fixture << " on " << c.topology;
}

class ClusterE2eTest : public ::testing::TestWithParam<TopologyCase> {};

TEST_P(ClusterE2eTest, ConcurrentGreedyStreamsEqualTheEngineAndTheFixtures) {
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      "deploy/local/" + GetParam().topology + ".json", FixtureDir(GetParam().fixture));
  ASSERT_NE(cluster, nullptr);
  testing::ExpectConcurrentStreamsEqualTheEngine(cluster->gateway(), GetParam().fixture);
  EXPECT_TRUE(cluster->WaitForIdleKv());
  // Every expert server took part (the router's per-server counts).
  grpc::ClientContext context;
  v1::RouterStats stats;
  ASSERT_TRUE(cluster->router().GetStats(&context, v1::GetRouterStatsRequest(), &stats).ok());
  for (const v1::ExpertServerCounts& server : stats.servers()) {
    EXPECT_GT(server.slots(), 0) << server.address();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Topologies, ClusterE2eTest,
    ::testing::Values(TopologyCase{"tiny-mixtral", "one-expert-server"},
                      TopologyCase{"tiny-mixtral", "four-slices"},
                      TopologyCase{"tiny-mixtral", "replicated"},
                      TopologyCase{"tiny-qwen2-moe", "one-expert-server"},
                      TopologyCase{"tiny-qwen2-moe", "four-slices"},
                      TopologyCase{"tiny-qwen2-moe", "replicated"}),
    [](const auto& info) {
      std::string name = info.param.fixture + "_" + info.param.topology;
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      return name;
    });

// The single-process reference under the same capacity policy: a
// Transformer over the full weights whose MoE step is ReferenceCapacityMoe,
// generating greedily one request at a time (the whole prompt in one step,
// then one token per step, as the attention server runs a request alone).
class CapacityReference {
 public:
  CapacityReference(const std::string& model_dir, double capacity_factor, bool drop) {
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(model_dir);
    EXPECT_TRUE(ckpt.ok()) << ckpt.status();
    absl::StatusOr<ModelWeights> weights = LoadModelWeights(
        std::shared_ptr<Checkpoint>(*std::move(ckpt)), WeightSelection::Full());
    EXPECT_TRUE(weights.ok()) << weights.status();
    weights_ = *std::move(weights);
    const ModelConfig& c = weights_.config;
    KvCacheShape shape{c.num_layers, c.num_kv_heads, c.head_dim, 16};
    cache_ = *KvCache::Create(shape, 8 << 20);
    moe_ = std::make_unique<testing::ReferenceCapacityMoe>(&weights_, capacity_factor, drop);
    transformer_ = std::make_unique<Transformer>(&weights_, cache_.get(), moe_.get(), &pool_);
  }

  std::vector<int32_t> Generate(const std::vector<int32_t>& prompt, int max_tokens) {
    GenerationRequest request;
    request.prompt = prompt;
    request.max_tokens = max_tokens;
    request.ignore_eos = true;
    SequenceState state(&request, &weights_.config);
    const KvCache::SeqId seq = next_seq_++;
    EXPECT_TRUE(cache_->AddSequence(seq).ok());
    std::vector<SequenceChunk> chunk = {{seq, state.TakePrefillChunk(prompt.size()), true}};
    while (!state.done()) {
      absl::StatusOr<std::vector<float>> logits = transformer_->Forward(chunk);
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) break;
      state.Advance(absl::MakeSpan(*logits));
      chunk = {{seq, state.DecodeInput(), true}};
    }
    cache_->FreeSequence(seq);
    return state.output();
  }

  const std::map<std::pair<int, int>, testing::ReferenceSlotCounts>& counts() const {
    return moe_->counts();
  }

 private:
  ModelWeights weights_;
  std::unique_ptr<KvCache> cache_;
  ThreadPool pool_{1};
  std::unique_ptr<testing::ReferenceCapacityMoe> moe_;
  std::unique_ptr<Transformer> transformer_;
  KvCache::SeqId next_seq_ = 0;
};

struct OverflowCase {
  std::string topology;
  double capacity_factor;  // as in the topology file
  bool drop;
};
void PrintTo(const OverflowCase& c, std::ostream* os) {
  *os << c.topology << " (capacity factor " << c.capacity_factor << ")";
}

class OverflowE2eTest : public ::testing::TestWithParam<OverflowCase> {};

TEST_P(OverflowE2eTest, CountsEqualThePlainReferenceAndRunsRepeat) {
  const std::string dir = FixtureDir("tiny-mixtral");
  absl::StatusOr<std::vector<testing::FixtureCase>> cases = testing::LoadFixtureCases(dir);
  ASSERT_TRUE(cases.ok()) << cases.status();
  std::unique_ptr<LaunchedCluster> cluster =
      LaunchedCluster::Start("deploy/local/" + GetParam().topology + ".json", dir);
  ASSERT_NE(cluster, nullptr);
  CapacityReference reference(dir, GetParam().capacity_factor, GetParam().drop);

  // The router's counts by (layer, expert): tokens, overflowed, rerouted,
  // dropped.
  using Counts = std::map<std::pair<int, int>, std::vector<int64_t>>;
  auto router_counts = [&] {
    grpc::ClientContext context;
    v1::RouterStats stats;
    EXPECT_TRUE(cluster->router().GetStats(&context, v1::GetRouterStatsRequest(), &stats).ok());
    Counts counts;
    for (const v1::LayerDispatchCounts& layer : stats.layers()) {
      for (const v1::ExpertDispatchCounts& e : layer.experts()) {
        counts[{layer.layer(), e.expert()}] = {e.tokens(), e.overflowed(), e.rerouted(),
                                               e.dropped()};
      }
    }
    return counts;
  };

  // Each request alone (so that every routed batch is known), all twice.
  constexpr int kMaxTokens = 6;
  constexpr int kRounds = 2;
  Counts after_first_round;
  for (int round = 0; round < kRounds; ++round) {
    for (const testing::FixtureCase& fc : *cases) {
      const std::vector<int32_t> want = reference.Generate(fc.prompt, kMaxTokens);
      const StreamResult got = testing::RunGenerate(
          cluster->gateway(), testing::GreedyRequest(fc.prompt, kMaxTokens));
      ASSERT_TRUE(got.status.ok()) << got.status.error_message();
      EXPECT_EQ(got.tokens, want) << "round " << round << ", prompt of " << fc.prompt.size();
    }
    if (round == 0) after_first_round = router_counts();
  }
  // Run to run, the same requests are routed the same way: the second round
  // added exactly what the first did.
  const Counts final_counts = router_counts();
  ASSERT_EQ(final_counts.size(), after_first_round.size());
  for (const auto& [key, values] : final_counts) {
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(values[i], 2 * after_first_round.at(key)[i])
          << "layer " << key.first << " expert " << key.second << " count " << i;
    }
  }

  grpc::ClientContext context;
  v1::RouterStats stats;
  ASSERT_TRUE(cluster->router().GetStats(&context, v1::GetRouterStatsRequest(), &stats).ok());
  int64_t rerouted = 0, dropped = 0, want_rerouted = 0, want_dropped = 0;
  for (const v1::LayerDispatchCounts& layer : stats.layers()) {
    for (const v1::ExpertDispatchCounts& e : layer.experts()) {
      testing::ReferenceSlotCounts want;
      auto it = reference.counts().find({layer.layer(), e.expert()});
      if (it != reference.counts().end()) want = it->second;
      EXPECT_EQ(e.tokens(), want.tokens) << "layer " << layer.layer() << " expert " << e.expert();
      EXPECT_EQ(e.overflowed(), want.overflowed)
          << "layer " << layer.layer() << " expert " << e.expert();
      EXPECT_EQ(e.rerouted(), want.rerouted)
          << "layer " << layer.layer() << " expert " << e.expert();
      EXPECT_EQ(e.dropped(), want.dropped) << "layer " << layer.layer() << " expert " << e.expert();
      rerouted += e.rerouted();
      dropped += e.dropped();
      want_rerouted += want.rerouted;
      want_dropped += want.dropped;
    }
  }
  // The capacity is low enough that the policy had work to do.
  if (GetParam().drop) {
    EXPECT_GT(want_dropped, 0);
    EXPECT_EQ(want_rerouted, 0);
  } else {
    EXPECT_GT(want_rerouted, 0);
  }
  EXPECT_EQ(rerouted, want_rerouted);
  EXPECT_EQ(dropped, want_dropped);
}

INSTANTIATE_TEST_SUITE_P(Policies, OverflowE2eTest,
                         ::testing::Values(OverflowCase{"overflow", 0.5, false},
                                           OverflowCase{"overflow-drop", 0.5, true}),
                         [](const auto& info) {
                           return info.param.drop ? std::string("drop")
                                                  : std::string("reroute");
                         });

// moe-cli against a real cluster prints what moe-generate prints for the
// same request: the same prompt_ids, output_ids and finish_reason.
TEST(ClusterE2eCliTest, MoeCliJsonEqualsMoeGenerate) {
  const std::string dir = FixtureDir("tiny-qwen2-moe");
  std::unique_ptr<LaunchedCluster> cluster =
      LaunchedCluster::Start("deploy/local/replicated.json", dir);
  ASSERT_NE(cluster, nullptr);
  const testing::ProcessResult cli = testing::RunProcess(
      {MOE_CLI_BIN, "generate", "--gateway", cluster->address("gateway"),
       "--prompt-ids", "5,17,33,2,9", "--max-tokens", "12", "--ignore-eos", "--json"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  const testing::ProcessResult local = testing::RunProcess(
      {MOE_GENERATE_BIN, "--model", dir, "--prompt_ids", "5,17,33,2,9", "--max_tokens", "12",
       "--ignore_eos", "--json"});
  ASSERT_EQ(local.exit_code, 0) << local.err;
  const nlohmann::json got = nlohmann::json::parse(cli.out, nullptr, false);
  const nlohmann::json want = nlohmann::json::parse(local.out, nullptr, false);
  ASSERT_FALSE(got.is_discarded()) << cli.out;
  ASSERT_FALSE(want.is_discarded()) << local.out;
  for (const char* key : {"prompt_ids", "output_ids", "finish_reason"}) {
    EXPECT_EQ(got[key], want[key]) << key;
  }
  EXPECT_EQ(got["output_ids"].size(), 12u);
  EXPECT_EQ(got["usage"]["completion_tokens"], 12);
}

TEST(ClusterE2eRequestTest, InvalidRequestsNameTheFieldAndTheClusterServesNext) {
  std::unique_ptr<LaunchedCluster> cluster =
      LaunchedCluster::Start("deploy/local/four-slices.json", FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  testing::ExpectInvalidRequestsRefused(cluster->gateway());
}

}  // namespace
}  // namespace moe
