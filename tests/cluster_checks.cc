#include "tests/cluster_checks.h"

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/engine.h"
#include "core/generator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/inprocess_cluster.h"
#include "tests/reference_model.h"
#include "tests/test_util.h"

namespace moe::testing {
namespace {

using ::testing::HasSubstr;

}  // namespace

std::unique_ptr<Engine> LoadReferenceEngine(const std::string& model_dir) {
  EngineOptions options;
  options.model_dir = model_dir;
  options.num_threads = 1;
  options.kv_cache_bytes = 8 << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

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

void ExpectConcurrentStreamsEqualTheEngine(v1::Inference::Stub& gateway,
                                           const std::string& fixture) {
  const std::string dir = FixtureDir(fixture);
  absl::StatusOr<std::vector<FixtureCase>> cases = LoadFixtureCases(dir);
  ASSERT_TRUE(cases.ok()) << cases.status();
  std::unique_ptr<Engine> engine = LoadReferenceEngine(dir);
  ASSERT_NE(engine, nullptr);

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

  std::vector<StreamResult> results(streams.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < streams.size(); ++i) {
    clients.emplace_back([&, i] {
      results[i] = RunGenerate(
          gateway, GreedyRequest(streams[i].prompt, streams[i].max_tokens));
    });
  }
  for (std::thread& t : clients) t.join();

  for (size_t i = 0; i < streams.size(); ++i) {
    const StreamResult& r = results[i];
    ASSERT_TRUE(r.status.ok()) << i << ": " << r.status.error_message();
    const std::vector<int32_t> want =
        EngineTokens(*engine, streams[i].prompt, streams[i].max_tokens);
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
}

void ExpectInvalidRequestsRefused(v1::Inference::Stub& gateway) {
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
    v1::GenerateRequest request = GreedyRequest({1, 5, 9}, 4);
    c.mutate(request);
    const StreamResult r = RunGenerate(gateway, request);
    EXPECT_EQ(r.status.error_code(), c.code) << c.name;
    EXPECT_THAT(r.status.error_message(), HasSubstr(c.field)) << c.name;
    EXPECT_TRUE(r.tokens.empty()) << c.name;
    // The cluster serves a valid request right after.
    const StreamResult ok = RunGenerate(gateway,
                                                 GreedyRequest({1, 5, 9}, 2));
    ASSERT_TRUE(ok.status.ok()) << c.name << ": " << ok.status.error_message();
    EXPECT_EQ(ok.tokens.size(), 2u) << c.name;
  }
}

}  // namespace moe::testing
