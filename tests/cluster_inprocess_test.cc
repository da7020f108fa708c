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
#include <vector>

#include "core/engine.h"
#include "core/generator.h"
#include "core/logprobs.h"
#include "core/rpc/channel_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
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

// Greedy tokens of the single-process engine for one prompt alone.
std::vector<int32_t> EngineTokens(Engine& engine,
                                  const std::vector<int32_t>& prompt,
                                  int max_tokens) {
  GenerationRequest request;
  request.prompt = prompt;
  request.max_tokens = max_tokens;
  request.ignore_eos = true;
  absl::StatusOr<BatchGeneration> out =
      GenerateBatch(engine, absl::MakeConstSpan(&request, 1));
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->results[0].output : std::vector<int32_t>();
}

std::unique_ptr<InProcessCluster> StartCluster(const std::string& fixture) {
  InProcessClusterOptions options;
  options.model_dir = FixtureDir(fixture);
  options.placements = {
      testing::ExpertsWhere(options.model_dir, [](int, int e) { return e % 2 == 0; }),
      testing::ExpertsWhere(options.model_dir, [](int, int e) { return e % 2 == 1; })};
  options.attention.num_threads = 1;
  options.attention.kv_cache_bytes = 8 << 20;
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
// runs; false after 20 s.
bool WaitForIdleKv(InProcessCluster& cluster) {
  for (int i = 0; i < 2000; ++i) {
    const v1::AttentionLoad load = Load(cluster);
    if (load.kv_blocks_free() == load.kv_blocks_total() && load.running() == 0 &&
        load.waiting() == 0) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

class ClusterFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ClusterFixtureTest, ConcurrentGreedyStreamsEqualTheEngineAndTheFixtures) {
  const std::string dir = FixtureDir(GetParam());
  absl::StatusOr<std::vector<FixtureCase>> cases = testing::LoadFixtureCases(dir);
  ASSERT_TRUE(cases.ok()) << cases.status();
  EngineOptions engine_options;
  engine_options.model_dir = dir;
  engine_options.num_threads = 1;
  engine_options.kv_cache_bytes = 8 << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(engine_options);
  ASSERT_TRUE(engine.ok()) << engine.status();

  // The fixture cases plus five more prompts of other lengths and outputs.
  struct Stream {
    std::vector<int32_t> prompt;
    int max_tokens;
    std::vector<int32_t> fixture_tokens;  // empty when not a fixture case
  };
  std::vector<Stream> streams;
  for (const FixtureCase& fc : *cases) {
    streams.push_back({fc.prompt, static_cast<int>(fc.steps.size()), fc.Tokens()});
  }
  const std::vector<int32_t>& long_prompt = (*cases).back().prompt;
  for (int i = 0; i < 5; ++i) {
    std::vector<int32_t> prompt(long_prompt.begin() + i, long_prompt.begin() + 3 + 7 * i);
    streams.push_back({prompt, 3 + 4 * i, {}});
  }
  ASSERT_EQ(streams.size(), 8u);

  std::unique_ptr<InProcessCluster> cluster = StartCluster(GetParam());
  ASSERT_NE(cluster, nullptr);
  std::vector<StreamResult> results(streams.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < streams.size(); ++i) {
    clients.emplace_back([&, i] {
      results[i] = testing::RunGenerate(
          cluster->gateway(), testing::GreedyRequest(streams[i].prompt, streams[i].max_tokens));
    });
  }
  for (std::thread& t : clients) t.join();

  for (size_t i = 0; i < streams.size(); ++i) {
    const StreamResult& r = results[i];
    ASSERT_TRUE(r.status.ok()) << i << ": " << r.status.error_message();
    const std::vector<int32_t> want =
        EngineTokens(**engine, streams[i].prompt, streams[i].max_tokens);
    EXPECT_EQ(r.tokens, want) << "stream " << i;
    if (!streams[i].fixture_tokens.empty()) {
      EXPECT_EQ(r.tokens, streams[i].fixture_tokens) << "stream " << i;
    }
    EXPECT_EQ(r.finish_messages, 1) << i;
    EXPECT_EQ(r.finish_reason, v1::FINISH_REASON_LENGTH) << i;
    EXPECT_EQ(r.usage.completion_tokens(), streams[i].max_tokens) << i;
    EXPECT_EQ(r.usage.prompt_tokens(), static_cast<int>(streams[i].prompt.size())) << i;
    EXPECT_TRUE(r.request_id_consistent) << i;
    EXPECT_THAT(r.request_id, HasSubstr("gw-")) << i;
  }
  EXPECT_TRUE(WaitForIdleKv(*cluster));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ClusterFixtureTest,
                         ::testing::Values("tiny-mixtral", "tiny-qwen2-moe"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name) if (ch == '-') ch = '_';
                           return name;
                         });

TEST(ClusterRequestTest, InvalidRequestsNameTheFieldAndTheClusterServesNext) {
  std::unique_ptr<InProcessCluster> cluster = StartCluster("tiny-mixtral");
  ASSERT_NE(cluster, nullptr);
  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest&)> mutate;
    grpc::StatusCode code;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"empty prompt", [](v1::GenerateRequest& r) { r.clear_prompt_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt_ids"},
      {"negative id", [](v1::GenerateRequest& r) { r.set_prompt_ids(1, -1); },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt_ids[1]"},
      {"id past vocab", [](v1::GenerateRequest& r) { r.set_prompt_ids(0, 512); },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt_ids[0]"},
      {"max_tokens 0", [](v1::GenerateRequest& r) { r.set_max_tokens(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"},
      {"over context", [](v1::GenerateRequest& r) { r.set_max_tokens(4094); },
       grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"},
      {"NaN temperature",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(std::nanf("")); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"Inf temperature",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(INFINITY); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"negative temperature",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-0.5f); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.temperature"},
      {"negative top_k", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_k(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_k"},
      {"top_p 0", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"top_p above 1", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(1.5f); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"NaN top_p",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(std::nanf("")); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"},
      {"negative repetition_penalty",
       [](v1::GenerateRequest& r) { r.mutable_sampling()->set_repetition_penalty(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "sampling.repetition_penalty"},
      {"stop id past vocab", [](v1::GenerateRequest& r) { r.add_stop_token_ids(9999); },
       grpc::StatusCode::INVALID_ARGUMENT, "stop_token_ids"},
      {"logprobs too many", [](v1::GenerateRequest& r) { r.set_logprobs(21); },
       grpc::StatusCode::INVALID_ARGUMENT, "logprobs"},
      {"negative logprobs", [](v1::GenerateRequest& r) { r.set_logprobs(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "logprobs"},
      {"request_id too long",
       [](v1::GenerateRequest& r) { r.set_request_id(std::string(300, 'x')); },
       grpc::StatusCode::INVALID_ARGUMENT, "request_id"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request = testing::GreedyRequest({1, 5, 9}, 4);
    c.mutate(request);
    const StreamResult r = testing::RunGenerate(cluster->gateway(), request);
    EXPECT_EQ(r.status.error_code(), c.code) << c.name;
    EXPECT_THAT(r.status.error_message(), HasSubstr(c.field)) << c.name;
    EXPECT_TRUE(r.tokens.empty()) << c.name;
    // The cluster serves a valid request right after.
    const StreamResult ok = testing::RunGenerate(cluster->gateway(),
                                                 testing::GreedyRequest({1, 5, 9}, 2));
    ASSERT_TRUE(ok.status.ok()) << c.name << ": " << ok.status.error_message();
    EXPECT_EQ(ok.tokens.size(), 2u) << c.name;
  }
}

TEST(ClusterRequestTest, LogprobsDescribeTheEngineDistribution) {
  const std::string dir = FixtureDir("tiny-mixtral");
  EngineOptions engine_options;
  engine_options.model_dir = dir;
  engine_options.num_threads = 1;
  engine_options.kv_cache_bytes = 8 << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(engine_options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerationRequest local;
  local.prompt = {3, 14, 15, 92};
  local.max_tokens = 4;
  local.ignore_eos = true;
  local.capture_logits = true;
  absl::StatusOr<BatchGeneration> want = GenerateBatch(**engine, absl::MakeConstSpan(&local, 1));
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
