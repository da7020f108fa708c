// The engine against the reference fixtures (tests/data/fixtures/README.md):
// greedy tokens identical and every logit of every step within 2e-3, one
// sequence at a time, all cases batched, with small prefill chunks, on every
// matmul path and thread count; and the routing of each prompt's last token.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "core/cpu/kernels.h"
#include "core/engine.h"
#include "core/generator.h"
#include "gtest/gtest.h"
#include "tests/reference_model.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureCase;
using ::moe::testing::FixtureDir;
using ::moe::testing::LoadFixtureCases;
using ::moe::testing::LogitsNear;

constexpr double kLogitTolerance = 2e-3;

struct Variant {
  std::string fixture;
  int num_threads;
  bool avx512;  // false: the portable matmul path is forced
};

std::string VariantName(const ::testing::TestParamInfo<Variant>& info) {
  std::string name = info.param.fixture;
  for (char& ch : name) {
    if (ch == '-') ch = '_';
  }
  return name + "_threads" + std::to_string(info.param.num_threads) +
         (info.param.avx512 ? "_avx512" : "_portable");
}

GenerationRequest GreedyRequest(const FixtureCase& fc) {
  GenerationRequest request;
  request.prompt = fc.prompt;
  request.max_tokens = static_cast<int>(fc.steps.size());
  request.ignore_eos = true;
  request.capture_logits = true;
  return request;
}

// Tokens identical and every step's logits within tolerance.
void ExpectMatchesFixture(const FixtureCase& fc,
                          const GenerationResult& result) {
  EXPECT_EQ(result.output, fc.Tokens());
  EXPECT_EQ(result.finish, FinishReason::kLength);
  ASSERT_EQ(result.logits.size(), fc.steps.size());
  for (size_t s = 0; s < fc.steps.size(); ++s) {
    EXPECT_TRUE(
        LogitsNear(result.logits[s], fc.steps[s].logits, kLogitTolerance))
        << "step " << s;
  }
}

class EngineFixtureTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    cpu::SetAvx512MatMulEnabled(GetParam().avx512);
    const std::string dir = FixtureDir(GetParam().fixture);
    absl::StatusOr<std::vector<FixtureCase>> cases = LoadFixtureCases(dir);
    ASSERT_TRUE(cases.ok()) << cases.status();
    cases_ = *std::move(cases);
    ASSERT_FALSE(cases_.empty());
    EngineOptions options;
    options.model_dir = dir;
    options.num_threads = GetParam().num_threads;
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    RecordProperty("avx512_matmul", cpu::HasAvx512MatMul() ? "on" : "off");
  }

  void TearDown() override { cpu::SetAvx512MatMulEnabled(true); }

  // Every case on its own, then all cases as one batch.
  void CheckOneAtATimeAndBatched(const GeneratorOptions& options) {
    for (size_t c = 0; c < cases_.size(); ++c) {
      SCOPED_TRACE(::testing::Message() << "alone, case " << c);
      const GenerationRequest request = GreedyRequest(cases_[c]);
      absl::StatusOr<BatchGeneration> gen =
          GenerateBatch(*engine_, {request}, options);
      ASSERT_TRUE(gen.ok()) << gen.status();
      ASSERT_EQ(gen->results.size(), 1u);
      ExpectMatchesFixture(cases_[c], gen->results[0]);
    }
    std::vector<GenerationRequest> requests;
    for (const FixtureCase& fc : cases_) requests.push_back(GreedyRequest(fc));
    absl::StatusOr<BatchGeneration> gen =
        GenerateBatch(*engine_, requests, options);
    ASSERT_TRUE(gen.ok()) << gen.status();
    ASSERT_EQ(gen->results.size(), cases_.size());
    for (size_t c = 0; c < cases_.size(); ++c) {
      SCOPED_TRACE(::testing::Message() << "batched, case " << c);
      ExpectMatchesFixture(cases_[c], gen->results[c]);
    }
  }

  std::vector<FixtureCase> cases_;
  std::unique_ptr<Engine> engine_;
};

TEST_P(EngineFixtureTest, GreedyTokensAndLogitsMatch) {
  CheckOneAtATimeAndBatched(GeneratorOptions{});
}

TEST_P(EngineFixtureTest, SmallPrefillChunksMatch) {
  GeneratorOptions options;
  options.prefill_chunk_tokens = 3;
  CheckOneAtATimeAndBatched(options);
}

TEST_P(EngineFixtureTest, PromptForwardLogitsAndLastTokenRoutingMatch) {
  const ModelConfig& config = engine_->config();
  absl::Mutex mu;
  std::map<int, std::vector<int32_t>> last_row;  // layer -> experts
  std::map<int, int> calls;                      // layer -> observations
  ASSERT_TRUE(engine_->SetRoutingObserver([&](int layer, const Routing& routing) {
    absl::MutexLock lock(&mu);
    ++calls[layer];
    ASSERT_GT(routing.tokens, 0);
    ASSERT_EQ(routing.experts.size(),
              static_cast<size_t>(routing.tokens * routing.k));
    last_row[layer].assign(routing.experts.end() - routing.k,
                           routing.experts.end());
  }).ok());
  for (size_t c = 0; c < cases_.size(); ++c) {
    SCOPED_TRACE(::testing::Message() << "case " << c);
    const FixtureCase& fc = cases_[c];
    last_row.clear();
    calls.clear();
    const KvCache::SeqId seq = static_cast<KvCache::SeqId>(100 + c);
    ASSERT_TRUE(engine_->StartSequence(seq).ok());
    SequenceChunk chunk;
    chunk.seq = seq;
    chunk.tokens = fc.prompt;
    chunk.want_logits = true;
    absl::StatusOr<std::vector<float>> logits = engine_->Forward({chunk});
    engine_->EndSequence(seq);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_TRUE(LogitsNear(*logits, fc.steps[0].logits, kLogitTolerance));

    ASSERT_EQ(static_cast<int>(fc.prompt_routing_last_token.size()),
              config.num_layers);
    for (int l = 0; l < config.num_layers; ++l) {
      if (!config.IsMoeLayer(l)) {
        EXPECT_TRUE(fc.prompt_routing_last_token[l].empty()) << "layer " << l;
        EXPECT_EQ(calls.count(l), 0u) << "dense layer " << l << " was routed";
        continue;
      }
      EXPECT_EQ(calls[l], 1) << "layer " << l;
      const std::vector<int>& want = fc.prompt_routing_last_token[l];
      EXPECT_EQ(std::vector<int>(last_row[l].begin(), last_row[l].end()), want)
          << "layer " << l;
    }
  }
  ASSERT_TRUE(engine_->SetRoutingObserver(nullptr).ok());
}

std::vector<Variant> AllVariants() {
  std::vector<Variant> variants;
  for (const char* fixture : {"tiny-mixtral", "tiny-qwen2-moe"}) {
    for (int threads : {1, 2}) {
      for (bool avx512 : {true, false}) {
        variants.push_back({fixture, threads, avx512});
      }
    }
  }
  return variants;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineFixtureTest,
                         ::testing::ValuesIn(AllVariants()), VariantName);

}  // namespace
}  // namespace moe
