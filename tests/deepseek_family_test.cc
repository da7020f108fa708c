// The engine against the independent DeepSeek reference
// (tests/reference_deepseek.h) on generated checkpoints of the three
// DeepSeek shapes the issue names:
// * V2-Lite: plain q_proj, softmax scores, greedy top-k, two shared
//   experts, a dense first layer;
// * V2: group_limited_greedy over 4 groups, routed_scaling_factor applied
//   to unnormalised weights;
// * V3: q LoRA, sigmoid scores with e_score_correction_bias, noaux_tc,
//   renormalised and scaled weights, YaRN rope with its softmax-scale
//   correction, MoE on every other layer.
// The engine computes MLA in the absorbed form over its latent cache; the
// reference in the expanded form, with plain loops. Each case also runs the
// reference with one DeepSeek piece left out and checks that it then
// disagrees with the engine by more than 10x the tolerance.
//
// Also: bad DeepSeek checkpoints fail naming the field or tensor.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/generator.h"
#include "core/kv_cache.h"
#include "core/model_generator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/reference_deepseek.h"
#include "tests/reference_checks.h"
#include "tests/reference_model.h"
#include "tests/safetensors_builder.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::DeepseekAblation;
using ::moe::testing::DeepseekReference;
using ::moe::testing::LogitsNear;
using ::moe::testing::MakePrompt;
using ::moe::testing::MaxAbsDiff;
using ::moe::testing::TempDir;
using ::testing::HasSubstr;

constexpr double kLogitTolerance = 2e-3;
constexpr int kSteps = 5;
constexpr int kPromptLengths[] = {1, 7, 40};

struct Ablation {
  std::string what;
  DeepseekAblation ablation;
};

struct DeepseekCase {
  std::string name;
  GeneratorSpec spec;
  std::vector<Ablation> ablations;
};

void PrintTo(const DeepseekCase& c, std::ostream* os) { *os << c.name; }

std::vector<DeepseekCase> AllCases() {
  DeepseekAblation no_shared, no_kv_norm, no_interleave, no_group, no_scaling,
      no_bias, no_yarn, no_yarn_scale, no_q_norm;
  no_shared.skip_shared_experts = true;
  no_kv_norm.skip_kv_a_layernorm = true;
  no_interleave.skip_rope_interleave = true;
  no_group.skip_group_limit = true;
  no_scaling.skip_routed_scaling = true;
  no_bias.skip_correction_bias = true;
  no_yarn.skip_yarn = true;
  no_yarn_scale.skip_yarn_softmax_scale = true;
  no_q_norm.skip_q_a_layernorm = true;

  std::vector<DeepseekCase> cases;
  {
    DeepseekCase c{"v2_lite_bf16",
                   {SmallConfig(ModelFamily::kDeepseekV2), DType::kBF16, 1, 3},
                   {}};
    c.ablations = {{"shared experts", no_shared},
                   {"kv_a_layernorm", no_kv_norm},
                   {"rope interleave", no_interleave}};
    cases.push_back(c);
  }
  {
    DeepseekCase c{"v2_group_limited_f32_2shards",
                   {SmallConfig(ModelFamily::kDeepseekV2), DType::kF32, 2, 5},
                   {}};
    ModelConfig& m = c.spec.config;
    m.topk_method = TopkMethod::kGroupLimitedGreedy;
    // Top-3 within the 2 best of 4 groups (by their best score): with k = 2
    // the limit could never change a choice, as the second-best expert is
    // always in the best group or is the best of the second-best group.
    m.num_experts_per_tok = 3;
    m.n_group = 4;
    m.topk_group = 2;
    m.routed_scaling_factor = 2.0;  // V2: applied as the weights are not
                                    // renormalised
    c.ablations = {{"group limit", no_group},
                   {"routed scaling", no_scaling}};
    cases.push_back(c);
  }
  {
    DeepseekCase c{"v3_bf16",
                   {SmallConfig(ModelFamily::kDeepseekV3), DType::kBF16, 1, 7},
                   {}};
    c.spec.config.num_layers = 4;
    c.spec.config.moe_layer_freq = 2;  // MoE on layer 2; 0, 1, 3 dense
    c.ablations = {{"yarn", no_yarn},
                   {"yarn softmax scale", no_yarn_scale},
                   {"correction bias", no_bias},
                   {"group limit", no_group},
                   {"routed scaling", no_scaling},
                   {"q_a_layernorm", no_q_norm}};
    cases.push_back(c);
  }
  return cases;
}

class DeepseekFamilyTest : public ::testing::TestWithParam<DeepseekCase> {
 protected:
  void SetUp() override {
    const DeepseekCase& dc = GetParam();
    const absl::Status generated = GenerateModel(dir_.path(), dc.spec);
    ASSERT_TRUE(generated.ok()) << generated;
    absl::StatusOr<DeepseekReference> reference =
        DeepseekReference::Load(dir_.path());
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = std::make_unique<DeepseekReference>(*std::move(reference));
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
  std::unique_ptr<DeepseekReference> reference_;
  std::unique_ptr<Engine> engine_;
  std::vector<std::vector<int32_t>> prompts_;
};

TEST_P(DeepseekFamilyTest, EngineMatchesReferenceOneAtATime) {
  for (const std::vector<int32_t>& prompt : prompts_) {
    SCOPED_TRACE(::testing::Message() << "prompt length " << prompt.size());
    absl::StatusOr<BatchGeneration> gen =
        GenerateBatch(*engine_, {Request(prompt)});
    ASSERT_TRUE(gen.ok()) << gen.status();
    ExpectMatchesReference(prompt, gen->results[0]);
  }
}

TEST_P(DeepseekFamilyTest, EngineMatchesReferenceBatchedWithSmallChunks) {
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

TEST_P(DeepseekFamilyTest, PromptLastTokenRoutingMatchesReference) {
  const ModelConfig& config = engine_->config();
  std::map<int, std::vector<int>> last_row;  // layer -> experts, ascending
  ASSERT_TRUE(engine_->SetRoutingObserver([&](int layer, const Routing& r) {
    std::vector<int>& row = last_row[layer];
    row.assign(r.experts.end() - r.k, r.experts.end());
    std::sort(row.begin(), row.end());
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

TEST_P(DeepseekFamilyTest, ReferenceWithoutADeepseekPieceDisagrees) {
  const std::vector<int32_t>& prompt = prompts_.back();
  absl::StatusOr<BatchGeneration> gen =
      GenerateBatch(*engine_, {Request(prompt)});
  ASSERT_TRUE(gen.ok()) << gen.status();
  const std::vector<float>& engine_logits = gen->results[0].logits[0];
  ASSERT_TRUE(
      LogitsNear(engine_logits, reference_->Logits(prompt), kLogitTolerance));
  ASSERT_FALSE(GetParam().ablations.empty());
  for (const Ablation& a : GetParam().ablations) {
    absl::StatusOr<DeepseekReference> ablated =
        DeepseekReference::Load(dir_.path(), a.ablation);
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

TEST_P(DeepseekFamilyTest, KvCacheHoldsTheLatentOnly) {
  const ModelConfig& c = engine_->config();
  const KvCacheShape shape = KvCacheShape::ForModel(c, 16);
  EXPECT_EQ(shape.planes, 1);
  EXPECT_EQ(shape.BytesPerTokenPerLayer(),
            4 * (c.mla.kv_lora_rank + c.mla.qk_rope_head_dim));
}

INSTANTIATE_TEST_SUITE_P(Shapes, DeepseekFamilyTest,
                         ::testing::ValuesIn(AllCases()),
                         [](const auto& info) { return info.param.name; });

// --- Bad checkpoints -------------------------------------------------------

class BadDeepseekCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GeneratorSpec spec{SmallConfig(ModelFamily::kDeepseekV3), DType::kBF16, 1,
                       1};
    ASSERT_TRUE(GenerateModel(dir_.path(), spec).ok());
    config_ = nlohmann::json::parse(
        testing::ReadFileOrDie(dir_.Join("config.json")));
  }

  absl::Status Load() {
    EngineOptions options;
    options.model_dir = dir_.path();
    options.num_threads = 1;
    return Engine::Load(options).status();
  }

  void WriteConfig() {
    testing::WriteFileOrDie(dir_.Join("config.json"), config_.dump(2));
  }

  TempDir dir_;
  nlohmann::json config_;
};

TEST_F(BadDeepseekCheckpointTest, UnmodifiedCopyLoads) {
  EXPECT_TRUE(Load().ok()) << Load();
}

TEST_F(BadDeepseekCheckpointTest, MissingKvAProjIsNamed) {
  const std::string file = dir_.Join("model.safetensors");
  std::vector<testing::RawTensor> tensors = testing::ReadRawTensors(file);
  const std::string gone = "model.layers.1.self_attn.kv_a_proj_with_mqa.weight";
  const size_t before = tensors.size();
  std::erase_if(tensors,
                [&](const testing::RawTensor& t) { return t.name == gone; });
  ASSERT_EQ(tensors.size(), before - 1);
  testing::WriteFileOrDie(file, testing::BuildSafetensors(tensors));
  const absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr(gone));
}

TEST_F(BadDeepseekCheckpointTest, WrongKvLoraRankNamesTheTensor) {
  config_["kv_lora_rank"] = config_["kv_lora_rank"].get<int>() + 8;
  WriteConfig();
  const absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("kv_a_proj_with_mqa"));
}

TEST_F(BadDeepseekCheckpointTest, NGroupNotDividingTheExpertsIsNamed) {
  config_["n_group"] = 3;  // 8 experts
  WriteConfig();
  const absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("\"n_group\""));
}

TEST_F(BadDeepseekCheckpointTest, TopkGroupAboveNGroupIsNamed) {
  config_["topk_group"] = 5;  // n_group 4
  WriteConfig();
  const absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("\"topk_group\""));
}

TEST_F(BadDeepseekCheckpointTest, MissingCorrectionBiasIsNamed) {
  const std::string file = dir_.Join("model.safetensors");
  std::vector<testing::RawTensor> tensors = testing::ReadRawTensors(file);
  const std::string gone = "model.layers.2.mlp.gate.e_score_correction_bias";
  std::erase_if(tensors,
                [&](const testing::RawTensor& t) { return t.name == gone; });
  testing::WriteFileOrDie(file, testing::BuildSafetensors(tensors));
  const absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr(gone));
}

TEST_F(BadDeepseekCheckpointTest, UnsupportedPiecesAreRefusedByName) {
  struct Case {
    const char* field;
    nlohmann::json value;
  };
  for (const Case& c :
       {Case{"scoring_func", "relu"}, Case{"topk_method", "gready"},
        Case{"attention_bias", true}, Case{"q_lora_rank", -1},
        Case{"rope_scaling", {{"type", "linear"}, {"factor", 2}}},
        Case{"quantization_config", {{"quant_method", "fp8"}}}}) {
    SCOPED_TRACE(c.field);
    nlohmann::json saved = config_;
    config_[c.field] = c.value;
    WriteConfig();
    const absl::Status s = Load();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr(c.field));
    config_ = saved;
  }
}

}  // namespace
}  // namespace moe
