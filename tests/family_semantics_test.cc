// The engine against the plain reference model (tests/reference_model.h) on
// generated checkpoints of every family, covering what the fixtures do not:
// Qwen3-MoE per-head q/k norm and explicit head_dim, OLMoE whole-projection
// q/k norm and clip_qkv, Mixtral's sliding window, Qwen2-MoE with tied
// embeddings and renormalised top-k, F16/F32 weights and sharded files.
//
// The reference itself is validated against the fixtures in
// reference_model_test. Each case also runs the reference with one
// family-specific piece left out and checks that it then disagrees with the
// engine far beyond the tolerance: the comparison would catch an engine that
// ignored that piece.
#include <cctype>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/generator.h"
#include "core/model_generator.h"
#include "gtest/gtest.h"
#include "tests/reference_checks.h"
#include "tests/reference_model.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::LogitsNear;
using ::moe::testing::MakePrompt;
using ::moe::testing::MaxAbsDiff;
using ::moe::testing::ReferenceAblation;
using ::moe::testing::ReferenceModel;
using ::moe::testing::TempDir;

constexpr double kLogitTolerance = 2e-3;
// Generated tokens per prompt. The reference recomputes the whole sequence
// for each, so this stays small.
constexpr int kSteps = 5;
constexpr int kPromptLengths[] = {1, 7, 40};

struct Ablation {
  std::string what;
  ReferenceAblation ablation;
};

struct FamilyCase {
  std::string name;
  GeneratorSpec spec;
  std::vector<Ablation> ablations;  // pieces the comparison must notice
};

void PrintTo(const FamilyCase& c, std::ostream* os) { *os << c.name; }

std::vector<FamilyCase> AllCases() {
  ReferenceAblation no_qk_norm;
  no_qk_norm.skip_qk_norm = true;
  ReferenceAblation no_clip;
  no_clip.skip_clip_qkv = true;
  ReferenceAblation no_window;
  no_window.ignore_sliding_window = true;
  ReferenceAblation no_shared_gate;
  no_shared_gate.skip_shared_expert_gate = true;
  ReferenceAblation flip_norm;
  flip_norm.flip_norm_topk_prob = true;

  std::vector<FamilyCase> cases;
  {
    FamilyCase c{"qwen3_moe_bf16",
                 {SmallConfig(ModelFamily::kQwen3Moe), DType::kBF16, 1, 11},
                 {}};
    c.ablations = {{"per-head q/k norm", no_qk_norm},
                   {"top-k renormalisation", flip_norm}};
    cases.push_back(c);
  }
  {
    // A dense first layer (mlp_only_layers) and three F32 shards.
    FamilyCase c{"qwen3_moe_dense_layer_f32_3shards",
                 {SmallConfig(ModelFamily::kQwen3Moe), DType::kF32, 3, 12},
                 {}};
    c.spec.config.mlp_only_layers = {0};
    c.spec.config.dense_intermediate_size = 80;
    c.ablations = {{"per-head q/k norm", no_qk_norm}};
    cases.push_back(c);
  }
  {
    FamilyCase c{"olmoe_f16_3shards",
                 {SmallConfig(ModelFamily::kOlmoe), DType::kF16, 3, 13},
                 {}};
    c.ablations = {{"whole-projection q/k norm", no_qk_norm}};
    cases.push_back(c);
  }
  {
    // clip_qkv and attention biases (q/k/v and o).
    FamilyCase c{"olmoe_clip_bias_f32",
                 {SmallConfig(ModelFamily::kOlmoe), DType::kF32, 1, 14},
                 {}};
    c.spec.config.clip_qkv = 2.0f;
    c.spec.config.qkv_bias = true;
    c.spec.config.o_bias = true;
    c.ablations = {{"clip_qkv", no_clip},
                   {"whole-projection q/k norm", no_qk_norm}};
    cases.push_back(c);
  }
  {
    FamilyCase c{"mixtral_sliding_window_f32",
                 {SmallConfig(ModelFamily::kMixtral), DType::kF32, 1, 15},
                 {}};
    c.spec.config.sliding_window = 8;
    c.ablations = {{"sliding window", no_window}};
    cases.push_back(c);
  }
  {
    FamilyCase c{"qwen2_moe_tied_norm_topk_bf16_3shards",
                 {SmallConfig(ModelFamily::kQwen2Moe), DType::kBF16, 3, 16},
                 {}};
    c.spec.config.tie_word_embeddings = true;
    c.spec.config.norm_topk_prob = true;
    c.ablations = {{"shared expert gate", no_shared_gate},
                   {"top-k renormalisation", flip_norm}};
    cases.push_back(c);
  }
  return cases;
}

class FamilySemanticsTest : public ::testing::TestWithParam<FamilyCase> {
 protected:
  void SetUp() override {
    const FamilyCase& fc = GetParam();
    const absl::Status generated = GenerateModel(dir_.path(), fc.spec);
    ASSERT_TRUE(generated.ok()) << generated;
    absl::StatusOr<ReferenceModel> reference =
        ReferenceModel::Load(dir_.path());
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = std::make_unique<ReferenceModel>(*std::move(reference));
    EngineOptions options;
    options.model_dir = dir_.path();
    options.num_threads = 2;
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    for (int length : kPromptLengths) {
      prompts_.push_back(
          MakePrompt(length, engine_->config().vocab_size, length));
    }
  }

  GenerationRequest Request(const std::vector<int32_t>& prompt) const {
    GenerationRequest request;
    request.prompt = prompt;
    request.max_tokens = kSteps;
    request.ignore_eos = true;
    request.capture_logits = true;
    return request;
  }

  void ExpectMatchesReference(const std::vector<int32_t>& prompt,
                              const GenerationResult& result) const {
    testing::ExpectGreedyMatchesReference(*reference_, prompt, result, kSteps,
                                          kLogitTolerance);
  }

  TempDir dir_;
  std::unique_ptr<ReferenceModel> reference_;
  std::unique_ptr<Engine> engine_;
  std::vector<std::vector<int32_t>> prompts_;
};

TEST_P(FamilySemanticsTest, EngineMatchesReferenceOneAtATime) {
  for (const std::vector<int32_t>& prompt : prompts_) {
    SCOPED_TRACE(::testing::Message() << "prompt length " << prompt.size());
    absl::StatusOr<BatchGeneration> gen =
        GenerateBatch(*engine_, {Request(prompt)});
    ASSERT_TRUE(gen.ok()) << gen.status();
    ExpectMatchesReference(prompt, gen->results[0]);
  }
}

TEST_P(FamilySemanticsTest, EngineMatchesReferenceBatchedWithSmallChunks) {
  GeneratorOptions options;
  options.prefill_chunk_tokens = 5;
  std::vector<GenerationRequest> requests;
  for (const std::vector<int32_t>& prompt : prompts_) {
    requests.push_back(Request(prompt));
  }
  absl::StatusOr<BatchGeneration> gen =
      GenerateBatch(*engine_, requests, options);
  ASSERT_TRUE(gen.ok()) << gen.status();
  ASSERT_EQ(gen->results.size(), prompts_.size());
  for (size_t i = 0; i < prompts_.size(); ++i) {
    SCOPED_TRACE(::testing::Message()
                 << "prompt length " << prompts_[i].size());
    ExpectMatchesReference(prompts_[i], gen->results[i]);
  }
}

TEST_P(FamilySemanticsTest, PromptLastTokenRoutingMatchesReference) {
  const ModelConfig& config = engine_->config();
  std::map<int, std::vector<int>> last_row;  // layer -> experts
  ASSERT_TRUE(engine_->SetRoutingObserver([&](int layer, const Routing& routing) {
    last_row[layer].assign(routing.experts.end() - routing.k,
                           routing.experts.end());
  }).ok());
  for (size_t p = 0; p < prompts_.size(); ++p) {
    SCOPED_TRACE(::testing::Message()
                 << "prompt length " << prompts_[p].size());
    last_row.clear();
    const KvCache::SeqId seq = static_cast<KvCache::SeqId>(p + 1);
    ASSERT_TRUE(engine_->StartSequence(seq).ok());
    SequenceChunk chunk;
    chunk.seq = seq;
    chunk.tokens = prompts_[p];
    chunk.want_logits = true;
    absl::StatusOr<std::vector<float>> logits = engine_->Forward({chunk});
    engine_->EndSequence(seq);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const std::vector<std::vector<int>> want =
        reference_->RoutingOfLastToken(prompts_[p]);
    ASSERT_EQ(static_cast<int>(want.size()), config.num_layers);
    for (int l = 0; l < config.num_layers; ++l) {
      if (config.IsMoeLayer(l)) {
        EXPECT_EQ(last_row[l], want[l]) << "layer " << l;
      } else {
        EXPECT_TRUE(want[l].empty()) << "layer " << l;
        EXPECT_EQ(last_row.count(l), 0u) << "dense layer " << l << " routed";
      }
    }
  }
  ASSERT_TRUE(engine_->SetRoutingObserver(nullptr).ok());
}

TEST_P(FamilySemanticsTest, ReferenceWithoutAFamilyPieceDisagrees) {
  // The longest prompt: the sliding window only matters past its length.
  const std::vector<int32_t>& prompt = prompts_.back();
  ASSERT_GT(static_cast<int>(prompt.size()), 8 * 2);
  absl::StatusOr<BatchGeneration> gen =
      GenerateBatch(*engine_, {Request(prompt)});
  ASSERT_TRUE(gen.ok()) << gen.status();
  const std::vector<float>& engine_logits = gen->results[0].logits[0];
  ASSERT_TRUE(
      LogitsNear(engine_logits, reference_->Logits(prompt), kLogitTolerance));
  ASSERT_FALSE(GetParam().ablations.empty());
  for (const Ablation& a : GetParam().ablations) {
    absl::StatusOr<ReferenceModel> ablated =
        ReferenceModel::Load(dir_.path(), a.ablation);
    ASSERT_TRUE(ablated.ok()) << ablated.status();
    const double diff = MaxAbsDiff(engine_logits, ablated->Logits(prompt));
    std::string key = "max_diff_without_" + a.what;
    for (char& ch : key) {
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    }
    RecordProperty(key, std::to_string(diff));
    EXPECT_GT(diff, 10 * kLogitTolerance) << "without " << a.what;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilySemanticsTest,
                         ::testing::ValuesIn(AllCases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace moe
