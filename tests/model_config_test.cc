// Tests of core/model_config.h: parsing Hugging Face config.json files of
// every family, the errors for bad configs, and the JSON round trip.
#include "core/model_config.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/rope_scaling.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureDir;
using ::moe::testing::ReadFileOrDie;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using Json = nlohmann::json;

// Minimal valid configs of each family, edited by the error tests.
Json MixtralJson() {
  return Json::parse(R"({
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "intermediate_size": 96,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "eos_token_id": 2
  })");
}

Json Qwen2MoeJson() {
  return Json::parse(R"({
    "architectures": ["Qwen2MoeForCausalLM"],
    "model_type": "qwen2_moe",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 48,
    "intermediate_size": 96,
    "shared_expert_intermediate_size": 80,
    "decoder_sparse_step": 1,
    "mlp_only_layers": []
  })");
}

Json Qwen3MoeJson() {
  return Json::parse(R"({
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 600,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 8192,
    "num_experts": 16,
    "num_experts_per_tok": 4,
    "moe_intermediate_size": 40,
    "norm_topk_prob": true,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "attention_bias": false,
    "tie_word_embeddings": true,
    "bos_token_id": 5,
    "eos_token_id": [7, 9],
    "torch_dtype": "bfloat16"
  })");
}

Json OlmoeJson() {
  return Json::parse(R"({
    "architectures": ["OlmoeForCausalLM"],
    "model_type": "olmoe",
    "hidden_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
    "vocab_size": 300,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "max_position_embeddings": 4096,
    "intermediate_size": 32,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "norm_topk_prob": false,
    "clip_qkv": 8.0,
    "attention_bias": false,
    "bos_token_id": null,
    "eos_token_id": 299,
    "torch_dtype": "float32"
  })");
}

absl::StatusOr<ModelConfig> Parse(const Json& j) {
  return ParseModelConfig(j.dump());
}

ModelConfig ParseOk(const Json& j) {
  absl::StatusOr<ModelConfig> c = Parse(j);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

// Expects `j` to be rejected with INVALID_ARGUMENT naming `field`.
void ExpectErrorNaming(const Json& j, const std::string& field) {
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_FALSE(c.ok()) << "accepted: " << j.dump();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument)
      << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr(field)) << j.dump();
}

void ExpectSameConfig(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.o_bias, b.o_bias);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.clip_qkv, b.clip_qkv);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.num_experts, b.num_experts);
  EXPECT_EQ(a.num_experts_per_tok, b.num_experts_per_tok);
  EXPECT_EQ(a.expert_intermediate_size, b.expert_intermediate_size);
  EXPECT_EQ(a.norm_topk_prob, b.norm_topk_prob);
  EXPECT_EQ(a.decoder_sparse_step, b.decoder_sparse_step);
  EXPECT_EQ(a.mlp_only_layers, b.mlp_only_layers);
  EXPECT_EQ(a.dense_intermediate_size, b.dense_intermediate_size);
  EXPECT_EQ(a.shared_expert_intermediate_size,
            b.shared_expert_intermediate_size);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.torch_dtype, b.torch_dtype);
}

TEST(ModelConfigTest, TinyMixtralFixture) {
  absl::StatusOr<ModelConfig> loaded =
      LoadModelConfig(FixtureDir("tiny-mixtral"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const ModelConfig& c = *loaded;
  EXPECT_EQ(c.family, ModelFamily::kMixtral);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.q_dim(), 64);
  EXPECT_EQ(c.kv_dim(), 32);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.qk_norm, QkNorm::kNone);
  EXPECT_EQ(c.clip_qkv, 0.0f);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.expert_intermediate_size, 96);
  EXPECT_TRUE(c.norm_topk_prob);  // Mixtral always renormalises
  EXPECT_EQ(c.decoder_sparse_step, 1);
  EXPECT_THAT(c.mlp_only_layers, IsEmpty());
  EXPECT_EQ(c.dense_intermediate_size, 0);
  EXPECT_EQ(c.shared_expert_intermediate_size, 0);
  EXPECT_FALSE(c.has_shared_expert());
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_TRUE(c.IsMoeLayer(0));
  EXPECT_TRUE(c.IsMoeLayer(1));
  EXPECT_EQ(c.NumMoeLayers(), 2);
}

TEST(ModelConfigTest, TinyQwen2MoeFixture) {
  absl::StatusOr<ModelConfig> loaded =
      LoadModelConfig(FixtureDir("tiny-qwen2-moe"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const ModelConfig& c = *loaded;
  EXPECT_EQ(c.family, ModelFamily::kQwen2Moe);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_layers, 3);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.qk_norm, QkNorm::kNone);
  EXPECT_EQ(c.clip_qkv, 0.0f);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 3);
  EXPECT_EQ(c.expert_intermediate_size, 48);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.decoder_sparse_step, 1);
  EXPECT_THAT(c.mlp_only_layers, ElementsAre(1));
  EXPECT_EQ(c.dense_intermediate_size, 96);
  EXPECT_EQ(c.shared_expert_intermediate_size, 96);
  EXPECT_TRUE(c.has_shared_expert());
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_TRUE(c.IsMoeLayer(0));
  EXPECT_FALSE(c.IsMoeLayer(1));
  EXPECT_TRUE(c.IsMoeLayer(2));
  EXPECT_EQ(c.NumMoeLayers(), 2);
}

TEST(ModelConfigTest, ParseAndLoadAgree) {
  const std::string dir = FixtureDir("tiny-qwen2-moe");
  absl::StatusOr<ModelConfig> parsed =
      ParseModelConfig(ReadFileOrDie(dir + "/config.json"));
  absl::StatusOr<ModelConfig> loaded = LoadModelConfig(dir);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameConfig(*parsed, *loaded);
}

TEST(ModelConfigTest, LoadFromMissingDirectoryFails) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig("/nonexistent/moe/model");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("config.json"));
}

TEST(ModelConfigTest, Qwen3Moe) {
  const ModelConfig c = ParseOk(Qwen3MoeJson());
  EXPECT_EQ(c.family, ModelFamily::kQwen3Moe);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_layers, 3);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 32);  // explicit, not hidden / heads
  EXPECT_EQ(c.q_dim(), 128);
  EXPECT_EQ(c.kv_dim(), 64);
  EXPECT_EQ(c.vocab_size, 600);
  EXPECT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(c.clip_qkv, 0.0f);
  EXPECT_EQ(c.num_experts, 16);
  EXPECT_EQ(c.num_experts_per_tok, 4);
  EXPECT_EQ(c.expert_intermediate_size, 40);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_FALSE(c.has_shared_expert());
  EXPECT_EQ(c.dense_intermediate_size, 0);
  EXPECT_EQ(c.bos_token_id, 5);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(7, 9));
  EXPECT_EQ(c.NumMoeLayers(), 3);
}

TEST(ModelConfigTest, Qwen3MoeAttentionBias) {
  Json j = Qwen3MoeJson();
  j["attention_bias"] = true;
  const ModelConfig c = ParseOk(j);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
}

TEST(ModelConfigTest, Qwen3MoeRequiresHeadDim) {
  Json j = Qwen3MoeJson();
  j.erase("head_dim");
  ExpectErrorNaming(j, "head_dim");
}

TEST(ModelConfigTest, Olmoe) {
  const ModelConfig c = ParseOk(OlmoeJson());
  EXPECT_EQ(c.family, ModelFamily::kOlmoe);
  EXPECT_EQ(c.hidden_size, 96);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 6);
  EXPECT_EQ(c.num_kv_heads, 6);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.vocab_size, 300);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 1e4);
  EXPECT_EQ(c.qk_norm, QkNorm::kWholeProjection);
  EXPECT_EQ(c.clip_qkv, 8.0f);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.expert_intermediate_size, 32);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_FALSE(c.has_shared_expert());
  EXPECT_EQ(c.bos_token_id, -1);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(299));
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_TRUE(c.IsMoeLayer(0));
  EXPECT_TRUE(c.IsMoeLayer(1));
}

TEST(ModelConfigTest, OlmoeWithoutClip) {
  Json j = OlmoeJson();
  j["clip_qkv"] = nullptr;
  EXPECT_EQ(ParseOk(j).clip_qkv, 0.0f);
  j.erase("clip_qkv");
  EXPECT_EQ(ParseOk(j).clip_qkv, 0.0f);
}

TEST(ModelConfigTest, FamilyDefaultsFollowTransformers) {
  // Mixtral: rope_theta 1e6, rms_norm_eps 1e-5.
  Json mixtral = MixtralJson();
  ModelConfig c = ParseOk(mixtral);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.bos_token_id, -1);
  // Qwen2-MoE: rope_theta 1e4, rms_norm_eps 1e-6, no renormalisation.
  c = ParseOk(Qwen2MoeJson());
  EXPECT_EQ(c.rope_theta, 1e4);
  EXPECT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_FALSE(c.norm_topk_prob);
  // Qwen3-MoE: rms_norm_eps 1e-6, rope_theta 1e4.
  Json qwen3 = Qwen3MoeJson();
  qwen3.erase("rms_norm_eps");
  qwen3.erase("rope_theta");
  qwen3.erase("norm_topk_prob");
  c = ParseOk(qwen3);
  EXPECT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_EQ(c.rope_theta, 1e4);
  EXPECT_FALSE(c.norm_topk_prob);
  // OLMoE: rms_norm_eps 1e-5, rope_theta 1e4.
  Json olmoe = OlmoeJson();
  olmoe.erase("rms_norm_eps");
  olmoe.erase("rope_theta");
  c = ParseOk(olmoe);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 1e4);
}

TEST(ModelConfigTest, MixtralSlidingWindow) {
  Json j = MixtralJson();
  j["sliding_window"] = 4096;
  EXPECT_EQ(ParseOk(j).sliding_window, 4096);
  j["sliding_window"] = nullptr;
  EXPECT_EQ(ParseOk(j).sliding_window, 0);
}

TEST(ModelConfigTest, MixtralIgnoresNormTopkProbFalse) {
  Json j = MixtralJson();
  j["norm_topk_prob"] = false;
  EXPECT_TRUE(ParseOk(j).norm_topk_prob);
}

TEST(ModelConfigTest, DecoderSparseStepAndMlpOnlyLayers) {
  Json j = Qwen2MoeJson();  // 4 layers
  j["decoder_sparse_step"] = 2;
  ModelConfig c = ParseOk(j);
  // Hugging Face: MoE when (layer + 1) % decoder_sparse_step == 0.
  EXPECT_FALSE(c.IsMoeLayer(0));
  EXPECT_TRUE(c.IsMoeLayer(1));
  EXPECT_FALSE(c.IsMoeLayer(2));
  EXPECT_TRUE(c.IsMoeLayer(3));
  EXPECT_EQ(c.NumMoeLayers(), 2);
  EXPECT_EQ(c.dense_intermediate_size, 96);

  j["mlp_only_layers"] = {3};
  c = ParseOk(j);
  EXPECT_FALSE(c.IsMoeLayer(0));
  EXPECT_TRUE(c.IsMoeLayer(1));
  EXPECT_FALSE(c.IsMoeLayer(2));
  EXPECT_FALSE(c.IsMoeLayer(3));
  EXPECT_EQ(c.NumMoeLayers(), 1);

  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = {0, 2};
  c = ParseOk(j);
  EXPECT_FALSE(c.IsMoeLayer(0));
  EXPECT_TRUE(c.IsMoeLayer(1));
  EXPECT_FALSE(c.IsMoeLayer(2));
  EXPECT_TRUE(c.IsMoeLayer(3));
  EXPECT_THAT(c.mlp_only_layers, ElementsAre(0, 2));

  // Qwen3-MoE follows the same rule.
  Json q3 = Qwen3MoeJson();
  q3["mlp_only_layers"] = {0};
  q3["intermediate_size"] = 128;
  c = ParseOk(q3);
  EXPECT_FALSE(c.IsMoeLayer(0));
  EXPECT_TRUE(c.IsMoeLayer(1));
  EXPECT_TRUE(c.IsMoeLayer(2));
  EXPECT_EQ(c.dense_intermediate_size, 128);
}

TEST(ModelConfigTest, DenseLayersNeedIntermediateSize) {
  Json j = Qwen2MoeJson();
  j["mlp_only_layers"] = {1};
  j.erase("intermediate_size");
  ExpectErrorNaming(j, "intermediate_size");
}

TEST(ModelConfigTest, ModelTypeFallback) {
  Json j = MixtralJson();
  j.erase("architectures");
  EXPECT_EQ(ParseOk(j).family, ModelFamily::kMixtral);
  j = Qwen2MoeJson();
  j.erase("architectures");
  EXPECT_EQ(ParseOk(j).family, ModelFamily::kQwen2Moe);
  j = Qwen3MoeJson();
  j.erase("architectures");
  EXPECT_EQ(ParseOk(j).family, ModelFamily::kQwen3Moe);
  j = OlmoeJson();
  j.erase("architectures");
  EXPECT_EQ(ParseOk(j).family, ModelFamily::kOlmoe);
}

TEST(ModelConfigTest, UnknownArchitectureNamesIt) {
  Json j = MixtralJson();
  j["architectures"] = {"LlamaForCausalLM"};
  ExpectErrorNaming(j, "LlamaForCausalLM");
  j.erase("architectures");
  j["model_type"] = "llama";
  ExpectErrorNaming(j, "llama");
}

TEST(ModelConfigTest, NoArchitectureNorModelType) {
  Json j = MixtralJson();
  j.erase("architectures");
  j.erase("model_type");
  ExpectErrorNaming(j, "architectures");
}

TEST(ModelConfigTest, FamilyNames) {
  for (ModelFamily f : {ModelFamily::kMixtral, ModelFamily::kQwen2Moe,
                        ModelFamily::kQwen3Moe, ModelFamily::kOlmoe}) {
    absl::StatusOr<ModelFamily> by_name = ParseFamily(FamilyName(f));
    absl::StatusOr<ModelFamily> by_arch = ParseFamily(ArchitectureName(f));
    ASSERT_TRUE(by_name.ok()) << by_name.status();
    ASSERT_TRUE(by_arch.ok()) << by_arch.status();
    EXPECT_EQ(*by_name, f);
    EXPECT_EQ(*by_arch, f);
  }
  EXPECT_EQ(ArchitectureName(ModelFamily::kQwen3Moe), "Qwen3MoeForCausalLM");
  EXPECT_EQ(FamilyName(ModelFamily::kOlmoe), "olmoe");
  absl::StatusOr<ModelFamily> bad = ParseFamily("LlamaForCausalLM");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("LlamaForCausalLM"));
}

TEST(ModelConfigTest, MissingRequiredFieldsAreNamed) {
  struct Case {
    Json base;
    const char* field;
  };
  const Case cases[] = {
      {MixtralJson(), "hidden_size"},
      {MixtralJson(), "num_hidden_layers"},
      {MixtralJson(), "num_attention_heads"},
      {MixtralJson(), "vocab_size"},
      {MixtralJson(), "num_local_experts"},
      {MixtralJson(), "num_experts_per_tok"},
      {MixtralJson(), "intermediate_size"},
      {Qwen2MoeJson(), "hidden_size"},
      {Qwen2MoeJson(), "num_hidden_layers"},
      {Qwen2MoeJson(), "num_experts"},
      {Qwen2MoeJson(), "moe_intermediate_size"},
      {Qwen2MoeJson(), "shared_expert_intermediate_size"},
      {Qwen3MoeJson(), "num_experts"},
      {Qwen3MoeJson(), "moe_intermediate_size"},
      {OlmoeJson(), "num_experts"},
      {OlmoeJson(), "intermediate_size"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.base["model_type"].get<std::string>()) +
                 " without " + c.field);
    Json j = c.base;
    ASSERT_EQ(j.erase(c.field), 1u);
    ExpectErrorNaming(j, c.field);
    // null counts as missing.
    j[c.field] = nullptr;
    ExpectErrorNaming(j, c.field);
  }
}

TEST(ModelConfigTest, WrongTypesAreNamed) {
  struct Case {
    const char* field;
    Json value;
  };
  const Case cases[] = {
      {"hidden_size", "64"},          {"hidden_size", 64.5},
      {"hidden_size", -64},           {"hidden_size", 0},
      {"num_hidden_layers", true},    {"num_attention_heads", Json::array({4})},
      {"num_key_value_heads", "2"},   {"num_key_value_heads", 0},
      {"vocab_size", Json::object()}, {"num_local_experts", "8"},
      {"num_experts_per_tok", 2.5},   {"intermediate_size", "96"},
      {"rms_norm_eps", "1e-5"},       {"rope_theta", "10000"},
      {"tie_word_embeddings", "yes"}, {"tie_word_embeddings", 1},
      {"eos_token_id", "2"},          {"eos_token_id", Json::array({2, "3"})},
      {"bos_token_id", 1.5},          {"max_position_embeddings", "4096"},
      {"sliding_window", "4096"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.field) + " = " + c.value.dump());
    Json j = MixtralJson();
    j[c.field] = c.value;
    ExpectErrorNaming(j, c.field);
  }
  Json q = Qwen2MoeJson();
  q["mlp_only_layers"] = "1";
  ExpectErrorNaming(q, "mlp_only_layers");
  q = Qwen2MoeJson();
  q["norm_topk_prob"] = "false";
  ExpectErrorNaming(q, "norm_topk_prob");
  q = Qwen2MoeJson();
  q["decoder_sparse_step"] = 0;
  ExpectErrorNaming(q, "decoder_sparse_step");
  q = Qwen2MoeJson();
  q["shared_expert_intermediate_size"] = "80";
  ExpectErrorNaming(q, "shared_expert_intermediate_size");
  Json o = OlmoeJson();
  o["clip_qkv"] = "8";
  ExpectErrorNaming(o, "clip_qkv");
  o["clip_qkv"] = -1.0;
  ExpectErrorNaming(o, "clip_qkv");
}

TEST(ModelConfigTest, UnsupportedFeaturesAreNamed) {
  Json j = MixtralJson();
  j["hidden_act"] = "gelu";
  ExpectErrorNaming(j, "hidden_act");
  j["hidden_act"] = "silu";
  EXPECT_TRUE(Parse(j).ok());
  Json q = Qwen2MoeJson();
  q["use_sliding_window"] = true;
  ExpectErrorNaming(q, "use_sliding_window");
  q["use_sliding_window"] = false;
  EXPECT_TRUE(Parse(q).ok());
  // Rotary pairs need an even head_dim.
  Json q3 = Qwen3MoeJson();
  q3["head_dim"] = 33;
  ExpectErrorNaming(q3, "head_dim");
}

TEST(ModelConfigTest, InvalidJson) {
  for (const char* text :
       {"", "{", "{\"hidden_size\": 64,}", "not json", "[1, 2]", "42"}) {
    absl::StatusOr<ModelConfig> c = ParseModelConfig(text);
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

TEST(ModelConfigTest, KvHeadsMustDivideHeads) {
  Json j = MixtralJson();
  j["num_key_value_heads"] = 3;
  ExpectErrorNaming(j, "num_key_value_heads");
  j["num_key_value_heads"] = 8;  // more kv heads than heads
  ExpectErrorNaming(j, "num_key_value_heads");
}

TEST(ModelConfigTest, TopKAboveExpertCount) {
  Json j = MixtralJson();
  j["num_experts_per_tok"] = 9;
  ExpectErrorNaming(j, "num_experts_per_tok");
  j["num_experts_per_tok"] = 8;  // all experts is fine
  EXPECT_EQ(ParseOk(j).num_experts_per_tok, 8);
  Json q = Qwen2MoeJson();
  q["num_experts_per_tok"] = 9;
  ExpectErrorNaming(q, "num_experts_per_tok");
}

TEST(ModelConfigTest, RopeScalingIsRejected) {
  Json j = MixtralJson();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  ExpectErrorNaming(j, "rope_scaling");
  j["rope_scaling"] = nullptr;
  EXPECT_TRUE(Parse(j).ok());
}

TEST(ModelConfigTest, MlpOnlyLayersOutOfRange) {
  for (int bad : {4, 100, -1}) {
    Json j = Qwen2MoeJson();  // 4 layers
    j["mlp_only_layers"] = {0, bad};
    ExpectErrorNaming(j, "mlp_only_layers");
  }
}

TEST(ModelConfigTest, EosOutsideVocabulary) {
  Json j = MixtralJson();  // vocab 512
  j["eos_token_id"] = 512;
  ExpectErrorNaming(j, "eos_token_id");
  j["eos_token_id"] = {2, 600};
  ExpectErrorNaming(j, "eos_token_id");
  j["eos_token_id"] = -3;
  ExpectErrorNaming(j, "eos_token_id");
  j["eos_token_id"] = {0, 511};
  EXPECT_THAT(ParseOk(j).eos_token_ids, ElementsAre(0, 511));
}

TEST(ModelConfigTest, HugeEosIdsDoNotWrapIntoTheVocabulary) {
  // 2^32 + 2 truncated to 32 bits would be 2, a valid id.
  Json j = MixtralJson();
  j["eos_token_id"] = uint64_t{4294967298};
  ExpectErrorNaming(j, "eos_token_id");
  j["eos_token_id"] = {2, uint64_t{4294967298}};
  ExpectErrorNaming(j, "eos_token_id");
}

TEST(ModelConfigTest, FloatFieldsOutsideTheFloatRangeAreNamed) {
  // Valid doubles that become 0 or infinity as floats: no epsilon would
  // divide by zero in RMSNorm, and clip_qkv 0 means no clipping (found by
  // tests/fuzz/model_config_fuzzer: the config did not survive a round trip).
  for (double v : {1e-50, 1e300}) {
    SCOPED_TRACE(v);
    Json j = MixtralJson();
    j["rms_norm_eps"] = v;
    ExpectErrorNaming(j, "rms_norm_eps");
    Json o = OlmoeJson();
    o["clip_qkv"] = v;
    ExpectErrorNaming(o, "clip_qkv");
  }
  Json j = MixtralJson();
  j["rms_norm_eps"] = 1e-30;  // tiny but a normal float
  EXPECT_FLOAT_EQ(ParseOk(j).rms_norm_eps, 1e-30f);
}

TEST(ModelConfigTest, DefaultHeadDimOfZeroIsRefused) {
  // More heads than hidden units: hidden_size / num_attention_heads is 0
  // (found by tests/fuzz/model_config_fuzzer).
  Json j = MixtralJson();  // hidden 64
  j["num_attention_heads"] = 128;
  ExpectErrorNaming(j, "head_dim");
  j["head_dim"] = 16;  // given explicitly, it is fine
  EXPECT_EQ(ParseOk(j).head_dim, 16);
}

TEST(ModelConfigTest, RoundTripsThroughJsonForAllFamilies) {
  std::vector<ModelConfig> configs;
  for (const char* fixture : {"tiny-mixtral", "tiny-qwen2-moe"}) {
    absl::StatusOr<ModelConfig> c = LoadModelConfig(FixtureDir(fixture));
    ASSERT_TRUE(c.ok()) << c.status();
    configs.push_back(*c);
  }
  Json mixtral = MixtralJson();
  mixtral["sliding_window"] = 1024;
  mixtral["tie_word_embeddings"] = true;
  mixtral["rms_norm_eps"] = 3e-6;
  mixtral["eos_token_id"] = {2, 3, 4};
  configs.push_back(ParseOk(mixtral));
  Json qwen2 = Qwen2MoeJson();
  qwen2["decoder_sparse_step"] = 2;
  qwen2["mlp_only_layers"] = {3};
  qwen2["norm_topk_prob"] = true;
  configs.push_back(ParseOk(qwen2));
  qwen2["qkv_bias"] = false;
  qwen2["tie_word_embeddings"] = true;
  qwen2["bos_token_id"] = 0;
  configs.push_back(ParseOk(qwen2));
  configs.push_back(ParseOk(Qwen3MoeJson()));
  Json qwen3 = Qwen3MoeJson();
  qwen3["attention_bias"] = true;
  qwen3["mlp_only_layers"] = {1};
  qwen3["intermediate_size"] = 72;
  configs.push_back(ParseOk(qwen3));
  configs.push_back(ParseOk(OlmoeJson()));
  Json olmoe = OlmoeJson();
  olmoe["clip_qkv"] = nullptr;
  olmoe["attention_bias"] = true;
  olmoe["norm_topk_prob"] = true;
  configs.push_back(ParseOk(olmoe));

  for (const ModelConfig& c : configs) {
    SCOPED_TRACE(std::string(FamilyName(c.family)));
    const std::string text = ModelConfigToJson(c);
    // The output is in the family's Hugging Face layout.
    const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(j.is_discarded()) << text;
    ASSERT_TRUE(j.contains("architectures")) << text;
    EXPECT_EQ(j["architectures"][0], std::string(ArchitectureName(c.family)));
    absl::StatusOr<ModelConfig> back = ParseModelConfig(text);
    ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
    ExpectSameConfig(c, *back);
  }
}

// --- DeepSeek ---------------------------------------------------------------

// DeepSeek-V2-Lite's published config.json (the fields this engine reads;
// aux-loss and training fields left out).
Json DeepseekV2LiteJson() {
  return Json::parse(R"({
    "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
    "attention_bias": false, "bos_token_id": 100000, "eos_token_id": 100001,
    "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 2048,
    "intermediate_size": 10944, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "moe_intermediate_size": 1408,
    "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64,
    "n_shared_experts": 2, "norm_topk_prob": false, "num_attention_heads": 16,
    "num_experts_per_tok": 6, "num_hidden_layers": 27,
    "num_key_value_heads": 16, "q_lora_rank": null, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40,
                     "mscale": 0.707, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 1.0,
    "scoring_func": "softmax", "tie_word_embeddings": false, "topk_group": 1,
    "topk_method": "greedy", "torch_dtype": "bfloat16", "v_head_dim": 128,
    "vocab_size": 102400})");
}

// DeepSeek-V3's published config.json as a BF16 copy has it (no fp8
// quantization_config).
Json DeepseekV3Json() {
  return Json::parse(R"({
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "attention_bias": false, "bos_token_id": 0, "eos_token_id": 1,
    "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu",
    "hidden_size": 7168, "intermediate_size": 18432, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "moe_intermediate_size": 2048,
    "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
    "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 61,
    "num_key_value_heads": 128, "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40,
                     "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid", "tie_word_embeddings": false, "topk_group": 4,
    "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "v_head_dim": 128,
    "vocab_size": 129280})");
}

TEST(DeepseekConfigTest, ParsesDeepseekV2Lite) {
  const ModelConfig c = ParseOk(DeepseekV2LiteJson());
  EXPECT_EQ(c.family, ModelFamily::kDeepseekV2);
  EXPECT_TRUE(c.uses_mla());
  EXPECT_EQ(c.mla.q_lora_rank, 0);
  EXPECT_EQ(c.mla.kv_lora_rank, 512);
  EXPECT_EQ(c.mla.latent_dim(), 576);
  EXPECT_EQ(c.head_dim, 192);
  EXPECT_EQ(c.num_kv_heads, 16);
  EXPECT_EQ(c.num_experts, 64);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.shared_expert_intermediate_size, 2 * 1408);
  EXPECT_FALSE(c.shared_expert_gated);
  EXPECT_EQ(c.dense_intermediate_size, 10944);
  EXPECT_FALSE(c.IsMoeLayer(0));
  EXPECT_TRUE(c.IsMoeLayer(1));
  EXPECT_EQ(c.NumMoeLayers(), 26);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSoftmax);
  EXPECT_EQ(c.topk_method, TopkMethod::kGreedy);
  EXPECT_EQ(c.yarn.factor, 40);
  EXPECT_DOUBLE_EQ(c.yarn.mscale_all_dim, 0.707);
  EXPECT_FALSE(c.has_correction_bias());
}

TEST(DeepseekConfigTest, ParsesDeepseekV3) {
  const ModelConfig c = ParseOk(DeepseekV3Json());
  EXPECT_EQ(c.family, ModelFamily::kDeepseekV3);
  EXPECT_EQ(c.mla.q_lora_rank, 1536);
  EXPECT_EQ(c.NumMoeLayers(), 58);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_EQ(c.topk_method, TopkMethod::kNoauxTc);
  EXPECT_TRUE(c.has_correction_bias());
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.shared_expert_intermediate_size, 2048);
}

TEST(DeepseekConfigTest, RoundTripsThroughModelConfigToJson) {
  for (const Json& j : {DeepseekV2LiteJson(), DeepseekV3Json()}) {
    const ModelConfig c = ParseOk(j);
    absl::StatusOr<ModelConfig> again = ParseModelConfig(ModelConfigToJson(c));
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->mla.q_lora_rank, c.mla.q_lora_rank);
    EXPECT_EQ(again->n_group, c.n_group);
    EXPECT_EQ(again->topk_method, c.topk_method);
    EXPECT_EQ(again->yarn.mscale, c.yarn.mscale);
    EXPECT_EQ(again->shared_expert_intermediate_size,
              c.shared_expert_intermediate_size);
    EXPECT_EQ(again->NumMoeLayers(), c.NumMoeLayers());
  }
}

TEST(DeepseekConfigTest, BadFieldsAreNamed) {
  struct Case {
    const char* field;  // set to `value`, or removed when value is null
    Json value;
    const char* named;
  };
  const Case cases[] = {
      {"kv_lora_rank", nullptr, "\"kv_lora_rank\" is missing"},
      {"q_lora_rank", "x", "\"q_lora_rank\""},
      {"n_group", 7, "\"n_group\""},
      {"topk_group", 9, "\"topk_group\""},
      {"scoring_func", "tanh", "\"scoring_func\""},
      {"topk_method", "gready", "\"topk_method\""},
      {"qk_rope_head_dim", 63, "\"qk_rope_head_dim\""},
      {"attention_bias", true, "\"attention_bias\""},
      {"rope_interleave", false, "\"rope_interleave\""},
      {"quantization_config", Json{{"quant_method", "fp8"}},
       "\"quantization_config\""},
      {"rope_scaling", Json{{"type", "dynamic"}, {"factor", 2}},
       "\"rope_scaling.type\""},
      {"rope_scaling", Json{{"type", "yarn"}}, "\"rope_scaling.factor\""},
      {"n_routed_experts", nullptr, "\"n_routed_experts\" is missing"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    Json j = DeepseekV3Json();
    if (c.value.is_null()) {
      j.erase(c.field);
    } else {
      j[c.field] = c.value;
    }
    const absl::StatusOr<ModelConfig> parsed = ParseModelConfig(j.dump());
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.named));
  }
}

TEST(DeepseekConfigTest, YarnOfV2LiteGivesDeepseeksScales) {
  const ModelConfig c = ParseOk(DeepseekV2LiteJson());
  // qk_head_dim^-0.5 * (0.1 * 0.707 * ln 40 + 1)^2.
  const double m = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_NEAR(MlaSoftmaxScale(c), m * m / std::sqrt(192.0), 1e-6);
  const RopeTable rope = MlaRopeTable(c);
  ASSERT_EQ(rope.inv_freq.size(), 32u);
  // mscale == mscale_all_dim: no cos/sin magnitude change.
  EXPECT_FLOAT_EQ(rope.cos_sin_scale, 1.0f);
  // The ramp runs from dimension pair 10 (floor of the correction dim of 32
  // rotations) to 23 (ceil of that of 1 rotation): below it the original
  // frequencies, above it the frequencies divided by the factor.
  for (int i : {0, 5, 10}) {
    EXPECT_FLOAT_EQ(rope.inv_freq[i], std::pow(10000.0, -2.0 * i / 64)) << i;
  }
  for (int i : {23, 31}) {
    EXPECT_FLOAT_EQ(rope.inv_freq[i], std::pow(10000.0, -2.0 * i / 64) / 40)
        << i;
  }
  const double extra = std::pow(10000.0, -2.0 * 16 / 64);
  const double ramp = (16.0 - 10.0) / (23.0 - 10.0);
  EXPECT_NEAR(rope.inv_freq[16], extra / 40 * ramp + extra * (1 - ramp), 1e-7);
}

}  // namespace
}  // namespace moe
