// The whole service stack in one process (expert servers, router, attention
// server, gateway on ephemeral 127.0.0.1 ports): greedy streams equal the
// single-process engine and the fixtures; invalid requests are refused
// naming the field; Abort, client cancellation and deadlines end requests
// and give their KV blocks back.
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "core/engine.h"
#include "core/generator.h"
#include "core/logprobs.h"
#include "core/rpc/channel_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster_checks.h"
#include "tests/inprocess_cluster.h"
#include "tests/reference_model.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureCase;
using ::moe::testing::FixtureDir;
using ::moe::testing::InProcessCluster;
using ::moe::testing::InProcessClusterOptions;
using ::moe::testing::StreamResult;
using ::testing::HasSubstr;

std::unique_ptr<InProcessCluster> StartCluster(const std::string& fixture,
                                               int micro_batches = 1) {
  InProcessClusterOptions options;
  options.model_dir = FixtureDir(fixture);
  options.placements = {
      testing::ExpertsWhere(options.model_dir, [](int, int e) { return e % 2 == 0; }),
      testing::ExpertsWhere(options.model_dir, [](int, int e) { return e % 2 == 1; })};
  options.attention.num_threads = 1;
  options.attention.kv_cache_bytes = 8 << 20;
  options.attention.micro_batches = micro_batches;
  absl::StatusOr<std::unique_ptr<InProcessCluster>> cluster =
      InProcessCluster::Start(options);
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  return cluster.ok() ? *std::move(cluster) : nullptr;
}

v1::AttentionLoad Load(InProcessCluster& cluster) {
  grpc::ClientContext context;
  v1::AttentionLoad load;
  EXPECT_TRUE(cluster.attention(0).GetLoad(&context, v1::GetLoadRequest(), &load).ok());
  return load;
}

// Polls until every KV block of the attention server is free and nothing
// runs; false after about 60 s (against hangs only).
bool WaitForIdleKv(InProcessCluster& cluster) {
  for (int i = 0; i < 6000; ++i) {
    const v1::AttentionLoad load = Load(cluster);
    if (load.kv_blocks_free() == load.kv_blocks_total() && load.running() == 0 &&
        load.waiting() == 0) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

class ClusterFixtureTest
    : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(ClusterFixtureTest, ConcurrentGreedyStreamsEqualTheEngineAndTheFixtures) {
  const auto& [fixture, micro_batches] = GetParam();
  std::unique_ptr<InProcessCluster> cluster = StartCluster(fixture, micro_batches);
  ASSERT_NE(cluster, nullptr);
  testing::ExpectConcurrentStreamsEqualTheEngine(cluster->gateway(), fixture);
  EXPECT_TRUE(WaitForIdleKv(*cluster));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ClusterFixtureTest,
                         ::testing::Combine(::testing::Values("tiny-mixtral",
                                                              "tiny-qwen2-moe"),
                                            ::testing::Values(1, 2, 3)),
                         [](const auto& info) {
                           std::string name = std::get<0>(info.param);
                           for (char& ch : name) if (ch == '-') ch = '_';
                           return name + "_m" + std::to_string(std::get<1>(info.param));
                         });

TEST(ClusterRequestTest, InvalidRequestsNameTheFieldAndTheClusterServesNext) {
  std::unique_ptr<InProcessCluster> cluster = StartCluster("tiny-mixtral");
  ASSERT_NE(cluster, nullptr);
  testing::ExpectInvalidRequestsRefused(cluster->gateway());
}

TEST(ClusterRequestTest, LogprobsDescribeTheEngineDistribution) {
  std::unique_ptr<Engine> engine =
      testing::LoadReferenceEngine(FixtureDir("tiny-mixtral"));
  ASSERT_NE(engine, nullptr);
  GenerationRequest local;
  local.prompt = {3, 14, 15, 92};
  local.max_tokens = 4;
  local.ignore_eos = true;
  local.capture_logits = true;
  absl::StatusOr<BatchGeneration> want = GenerateBatch(*engine, absl::MakeConstSpan(&local, 1));
  ASSERT_TRUE(want.ok()) << want.status();

  std::unique_ptr<InProcessCluster> cluster = StartCluster("tiny-mixtral");
  ASSERT_NE(cluster, nullptr);
  v1::GenerateRequest request = testing::GreedyRequest(local.prompt, 4);
  request.set_logprobs(3);
  const StreamResult r = testing::RunGenerate(cluster->gateway(), request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.tokens, want->results[0].output);
  ASSERT_EQ(r.logprobs.size(), 4u);
  for (size_t s = 0; s < 4; ++s) {
    const TokenLogprobs expect =
        ComputeLogprobs(want->results[0].logits[s], r.tokens[s], 3);
    EXPECT_EQ(r.logprobs[s].token_id(), r.tokens[s]);
    EXPECT_NEAR(r.logprobs[s].logprob(), expect.logprob, 1e-4);
    ASSERT_EQ(r.logprobs[s].top_size(), 3);
    for (int j = 0; j < 3; ++j) {
      EXPECT_EQ(r.logprobs[s].top(j).token_id(), expect.top[j].first);
      EXPECT_NEAR(r.logprobs[s].top(j).logprob(), expect.top[j].second, 1e-4);
    }
    // Greedy picks the most likely token.
    EXPECT_EQ(r.logprobs[s].top(0).token_id(), r.tokens[s]);
  }
}

TEST(ClusterLifecycleTest, AbortEndsTheStreamWithAbortAndFreesKv) {
  std::unique_ptr<InProcessCluster> cluster = StartCluster("tiny-mixtral");
  ASSERT_NE(cluster, nullptr);
  const int64_t total = Load(*cluster).kv_blocks_total();
  v1::GenerateRequest request = testing::GreedyRequest({1, 2, 3, 4}, 4000);
  request.set_request_id("abort-me");
  grpc::ClientContext context;
  auto reader = cluster->gateway().Generate(&context, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));  // running now
  EXPECT_EQ(response.request_id(), "abort-me");
  EXPECT_LT(Load(*cluster).kv_blocks_free(), total);
  {
    grpc::ClientContext abort_context;
    v1::AbortRequest abort;
    abort.set_request_id("abort-me");
    v1::AbortResponse abort_response;
    ASSERT_TRUE(cluster->gateway().Abort(&abort_context, abort, &abort_response).ok());
    EXPECT_TRUE(abort_response.found());
  }
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  int tokens = response.token_ids_size();
  while (reader->Read(&response)) {
    tokens += response.token_ids_size();
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      finish = response.finish_reason();
      EXPECT_EQ(response.usage().completion_tokens(), tokens);
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(finish, v1::FINISH_REASON_ABORT);
  EXPECT_LT(tokens, 4000);
  EXPECT_TRUE(WaitForIdleKv(*cluster));
  // Unknown ids are reported as not found.
  grpc::ClientContext abort_context;
  v1::AbortRequest abort;
  abort.set_request_id("abort-me");
  v1::AbortResponse abort_response;
  ASSERT_TRUE(cluster->gateway().Abort(&abort_context, abort, &abort_response).ok());
  EXPECT_FALSE(abort_response.found());
}

TEST(ClusterLifecycleTest, ClientCancellationAndDeadlinesFreeKv) {
  std::unique_ptr<InProcessCluster> cluster = StartCluster("tiny-mixtral");
  ASSERT_NE(cluster, nullptr);
  {
    grpc::ClientContext context;
    auto reader = cluster->gateway().Generate(&context, testing::GreedyRequest({1, 2, 3}, 4000));
    v1::GenerateResponse response;
    ASSERT_TRUE(reader->Read(&response));
    context.TryCancel();
    while (reader->Read(&response)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_TRUE(WaitForIdleKv(*cluster));
  const StreamResult late = testing::RunGenerate(
      cluster->gateway(), testing::GreedyRequest({1, 2, 3}, 4000), /*timeout_seconds=*/0.3);
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitForIdleKv(*cluster));
  const StreamResult ok =
      testing::RunGenerate(cluster->gateway(), testing::GreedyRequest({1, 2, 3}, 3));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.tokens.size(), 3u);
}

TEST(ClusterRequestTest, ModelInfoDescribesTheModel) {
  std::unique_ptr<InProcessCluster> cluster = StartCluster("tiny-qwen2-moe");
  ASSERT_NE(cluster, nullptr);
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(cluster->gateway().GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.architecture(), "Qwen2MoeForCausalLM");
  EXPECT_EQ(info.num_experts(), 8);
  EXPECT_EQ(info.num_experts_per_tok(), 3);
  EXPECT_GT(info.vocab_size(), 0);
  EXPECT_GT(info.max_context_length(), 0);
}

}  // namespace
}  // namespace moe
