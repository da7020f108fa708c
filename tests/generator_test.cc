// Tests of the safetensors writer, the model generator and moe-mkmodel.
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"
#include "core/model_config.h"
#include "core/model_generator.h"
#include "core/model_weights.h"
#include "core/safetensors.h"
#include "core/safetensors_writer.h"
#include "core/weight_names.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace moe {

// Readable test parameters in gtest and ctest output.
void PrintTo(ModelFamily family, std::ostream* os) {
  *os << FamilyName(family);
}
void PrintTo(DType dtype, std::ostream* os) { *os << DTypeName(dtype); }

namespace {

using ::moe::testing::FixtureDir;
using ::moe::testing::ReadFileOrDie;
using ::moe::testing::TempDir;
using ::testing::HasSubstr;

constexpr ModelFamily kFamilies[] = {
    ModelFamily::kMixtral,    ModelFamily::kQwen2Moe,
    ModelFamily::kQwen3Moe,   ModelFamily::kOlmoe,
    ModelFamily::kDeepseekV2, ModelFamily::kDeepseekV3};

// Compares every ModelConfig field, naming the one that differs.
void ExpectSameConfig(const ModelConfig& want, const ModelConfig& got) {
  EXPECT_EQ(want.family, got.family);
  EXPECT_EQ(want.hidden_size, got.hidden_size);
  EXPECT_EQ(want.num_layers, got.num_layers);
  EXPECT_EQ(want.num_heads, got.num_heads);
  EXPECT_EQ(want.num_kv_heads, got.num_kv_heads);
  EXPECT_EQ(want.head_dim, got.head_dim);
  EXPECT_EQ(want.vocab_size, got.vocab_size);
  EXPECT_EQ(want.rms_norm_eps, got.rms_norm_eps);
  EXPECT_EQ(want.rope_theta, got.rope_theta);
  EXPECT_EQ(want.max_position_embeddings, got.max_position_embeddings);
  EXPECT_EQ(want.tie_word_embeddings, got.tie_word_embeddings);
  EXPECT_EQ(want.qkv_bias, got.qkv_bias);
  EXPECT_EQ(want.o_bias, got.o_bias);
  EXPECT_EQ(want.qk_norm, got.qk_norm);
  EXPECT_EQ(want.clip_qkv, got.clip_qkv);
  EXPECT_EQ(want.sliding_window, got.sliding_window);
  EXPECT_EQ(want.num_experts, got.num_experts);
  EXPECT_EQ(want.num_experts_per_tok, got.num_experts_per_tok);
  EXPECT_EQ(want.expert_intermediate_size, got.expert_intermediate_size);
  EXPECT_EQ(want.norm_topk_prob, got.norm_topk_prob);
  EXPECT_EQ(want.decoder_sparse_step, got.decoder_sparse_step);
  EXPECT_EQ(want.mlp_only_layers, got.mlp_only_layers);
  EXPECT_EQ(want.dense_intermediate_size, got.dense_intermediate_size);
  EXPECT_EQ(want.shared_expert_intermediate_size,
            got.shared_expert_intermediate_size);
  EXPECT_EQ(want.shared_expert_gated, got.shared_expert_gated);
  EXPECT_EQ(want.scoring_func, got.scoring_func);
  EXPECT_EQ(want.topk_method, got.topk_method);
  EXPECT_EQ(want.n_group, got.n_group);
  EXPECT_EQ(want.topk_group, got.topk_group);
  EXPECT_EQ(want.routed_scaling_factor, got.routed_scaling_factor);
  EXPECT_EQ(want.first_k_dense_replace, got.first_k_dense_replace);
  EXPECT_EQ(want.moe_layer_freq, got.moe_layer_freq);
  EXPECT_EQ(want.mla.q_lora_rank, got.mla.q_lora_rank);
  EXPECT_EQ(want.mla.kv_lora_rank, got.mla.kv_lora_rank);
  EXPECT_EQ(want.mla.qk_nope_head_dim, got.mla.qk_nope_head_dim);
  EXPECT_EQ(want.mla.qk_rope_head_dim, got.mla.qk_rope_head_dim);
  EXPECT_EQ(want.mla.v_head_dim, got.mla.v_head_dim);
  EXPECT_EQ(want.yarn.factor, got.yarn.factor);
  EXPECT_EQ(want.yarn.original_max_position_embeddings,
            got.yarn.original_max_position_embeddings);
  EXPECT_EQ(want.yarn.mscale, got.yarn.mscale);
  EXPECT_EQ(want.yarn.mscale_all_dim, got.yarn.mscale_all_dim);
  EXPECT_EQ(want.bos_token_id, got.bos_token_id);
  EXPECT_EQ(want.eos_token_ids, got.eos_token_ids);
  EXPECT_EQ(want.torch_dtype, got.torch_dtype);
}

const char* TorchDType(DType d) {
  switch (d) {
    case DType::kBF16:
      return "bfloat16";
    case DType::kF16:
      return "float16";
    case DType::kF32:
      return "float32";
  }
  return "";
}

// Names and files of every tensor, from the safetensors headers of `dir`.
std::map<std::string, std::string> TensorsOnDisk(const std::string& dir) {
  std::map<std::string, std::string> where;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".safetensors") continue;
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::Open(entry.path().string());
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) continue;
    for (const auto& [tensor, e] : (*file)->entries()) {
      EXPECT_TRUE(where.emplace(tensor, name).second) << tensor << " twice";
    }
  }
  return where;
}

std::vector<std::string> FilesIn(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// ---------------------------------------------------------------------------
// Every family x dtype x shard count: the checkpoint loads in full.

class GenerateModelTest
    : public ::testing::TestWithParam<std::tuple<ModelFamily, DType, int>> {};

TEST_P(GenerateModelTest, WritesACheckpointThatLoads) {
  const auto [family, dtype, shards] = GetParam();
  TempDir tmp;
  GeneratorSpec spec;
  spec.config = SmallConfig(family);
  spec.dtype = dtype;
  spec.num_shards = shards;
  spec.seed = 42;
  int64_t last_done = -1, last_total = -1;
  bool monotone = true;
  ASSERT_TRUE(GenerateModel(tmp.path(), spec, [&](int64_t done, int64_t total) {
                monotone &= done >= last_done && done <= total;
                last_done = done;
                last_total = total;
              }).ok());
  EXPECT_TRUE(monotone);
  EXPECT_EQ(last_done, last_total);

  // config.json reads back as the spec (torch_dtype names the dtype written).
  absl::StatusOr<ModelConfig> config = LoadModelConfig(tmp.path());
  ASSERT_TRUE(config.ok()) << config.status();
  ModelConfig want = spec.config;
  want.torch_dtype = TorchDType(dtype);
  ExpectSameConfig(want, *config);

  // Files and index.
  const std::map<std::string, std::string> on_disk = TensorsOnDisk(tmp.path());
  int64_t total_bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(tmp.path())) {
    if (entry.path().extension() != ".safetensors") continue;
    auto file = SafetensorsFile::Open(entry.path().string());
    ASSERT_TRUE(file.ok());
    for (const auto& [name, e] : (*file)->entries()) {
      // DeepSeek-V3's correction bias is float32 whatever the weights are.
      const bool f32 = absl::EndsWith(name, "e_score_correction_bias");
      EXPECT_EQ(e.dtype, DTypeName(f32 ? DType::kF32 : dtype)) << name;
      total_bytes += static_cast<int64_t>(e.end - e.begin);
    }
  }
  EXPECT_EQ(total_bytes, last_total);
  if (shards == 1) {
    EXPECT_EQ(FilesIn(tmp.path()),
              (std::vector<std::string>{"config.json", "model.safetensors"}));
  } else {
    std::vector<std::string> want_files = {"config.json",
                                           "model.safetensors.index.json"};
    for (int s = 1; s <= shards; ++s) {
      want_files.push_back(
          absl::StrCat("model-0000", s, "-of-0000", shards, ".safetensors"));
    }
    std::sort(want_files.begin(), want_files.end());
    EXPECT_EQ(FilesIn(tmp.path()), want_files);

    nlohmann::json index = nlohmann::json::parse(
        ReadFileOrDie(tmp.Join("model.safetensors.index.json")), nullptr,
        false);
    ASSERT_FALSE(index.is_discarded());
    EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), total_bytes);
    std::map<std::string, std::string> listed;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end();
         ++it) {
      listed[it.key()] = it.value().get<std::string>();
    }
    EXPECT_EQ(listed, on_disk);
    std::set<std::string> used;
    for (const auto& [name, file] : listed) used.insert(file);
    EXPECT_EQ(used.size(), static_cast<size_t>(shards)) << "an empty shard";
  }

  // Loads through the engine's loader, every tensor shape-checked.
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
      Checkpoint::Open(tmp.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  absl::StatusOr<ModelWeights> weights =
      LoadModelWeights(std::shared_ptr<Checkpoint>(std::move(*checkpoint)),
                       WeightSelection::Full());
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_EQ(weights->layers.size(),
            static_cast<size_t>(spec.config.num_layers));
  for (int l = 0; l < spec.config.num_layers; ++l) {
    const LayerWeights& layer = weights->layers[l];
    if (spec.config.IsMoeLayer(l)) {
      EXPECT_EQ(layer.experts.size(),
                static_cast<size_t>(spec.config.num_experts));
      EXPECT_FALSE(layer.router_gate.empty());
      EXPECT_EQ(layer.shared_expert.has_value(),
                spec.config.has_shared_expert());
    } else {
      EXPECT_TRUE(layer.dense_mlp.has_value()) << "layer " << l;
    }
  }
}

std::string ParamName(
    const ::testing::TestParamInfo<std::tuple<ModelFamily, DType, int>>& info) {
  return absl::StrCat(FamilyName(std::get<0>(info.param)), "_",
                      DTypeName(std::get<1>(info.param)), "_",
                      std::get<2>(info.param), "shards");
}

INSTANTIATE_TEST_SUITE_P(AllFamilies, GenerateModelTest,
                         ::testing::Combine(::testing::ValuesIn(kFamilies),
                                            ::testing::Values(DType::kBF16,
                                                              DType::kF16,
                                                              DType::kF32),
                                            ::testing::Values(1, 3)),
                         ParamName);

// ---------------------------------------------------------------------------
// Values.

// Reads tensor `name` of a single-file checkpoint as floats.
std::vector<float> ReadTensor(const std::string& dir, const std::string& name) {
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return {};
  absl::StatusOr<TensorView> view = (*file)->Get(name);
  EXPECT_TRUE(view.ok()) << view.status();
  if (!view.ok()) return {};
  std::vector<float> values(view->NumElements());
  for (size_t i = 0; i < values.size(); ++i) values[i] = view->At(i);
  return values;
}

void ExpectUniform(const std::vector<float>& v, float center, float scale,
                   const std::string& what) {
  ASSERT_FALSE(v.empty()) << what;
  double sum = 0, sum_sq = 0;
  float lo = v[0], hi = v[0];
  for (float x : v) {
    sum += x - center;
    sum_sq += (x - center) * (x - center);
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  const double n = static_cast<double>(v.size());
  const float slack = 0.01f * scale;  // BF16 rounding
  EXPECT_GE(lo, center - scale - slack) << what;
  EXPECT_LE(hi, center + scale + slack) << what;
  EXPECT_NEAR(sum / n, 0.0, 4 * scale / std::sqrt(3 * n)) << what;
  // Uniform on [-a, a] has variance a^2 / 3.
  EXPECT_NEAR(sum_sq / n, scale * scale / 3, 0.1 * scale * scale) << what;
  EXPECT_GT(std::set<float>(v.begin(), v.end()).size(), v.size() / 4) << what;
}

TEST(GenerateModelValuesTest, ScalesFollowFanIn) {
  TempDir tmp;
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kQwen2Moe);
  spec.dtype = DType::kF32;
  ASSERT_TRUE(GenerateModel(tmp.path(), spec).ok());
  const ModelConfig& c = spec.config;
  const float h = c.hidden_size;
  ExpectUniform(ReadTensor(tmp.path(), EmbedTokensName()), 0, 1, "embedding");
  ExpectUniform(
      ReadTensor(tmp.path(), AttentionTensorName(0, "q_proj", "weight")), 0,
      std::sqrt(3 / h), "q_proj");
  ExpectUniform(
      ReadTensor(tmp.path(), AttentionTensorName(0, "q_proj", "bias")), 0, 0.1f,
      "q_proj bias");
  ExpectUniform(
      ReadTensor(tmp.path(), ExpertTensorName(c, 0, 3, FfnProj::kDown)), 0,
      std::sqrt(3.0f / c.expert_intermediate_size), "expert down");
  ExpectUniform(ReadTensor(tmp.path(), RouterGateName(c, 0)), 0,
                3 * std::sqrt(3 / h), "router gate");
  ExpectUniform(
      ReadTensor(tmp.path(), LayerTensorName(0, "input_layernorm.weight")), 1,
      0.1f, "norm");
  ExpectUniform(ReadTensor(tmp.path(), LmHeadName()), 0, std::sqrt(3 / h),
                "lm_head");
}

// Hot experts: every gate row is mean-free noise of the usual width, the
// hot experts' rows are centred at hot_gate_bias / hidden, the embedding
// gets a shared component of 1, the other tensors are as without them; and
// for hidden states with that shared component the top-k picks the hot
// experts for most tokens, the others far less than an even share.
TEST(GenerateModelValuesTest, HotExpertsWinTheTopKForMostTokens) {
  TempDir tmp;
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kMixtral);
  spec.dtype = DType::kF32;
  spec.hot_experts = {0, 3};
  spec.hot_gate_bias = 6;
  ASSERT_TRUE(GenerateModel(tmp.path(), spec).ok());
  const ModelConfig& c = spec.config;
  const int64_t h = c.hidden_size;
  const float width = 3 * std::sqrt(3.0f / static_cast<float>(h));
  const std::vector<float> gate = ReadTensor(tmp.path(), RouterGateName(c, 1));
  ASSERT_EQ(gate.size(), static_cast<size_t>(c.num_experts * h));
  for (int e = 0; e < c.num_experts; ++e) {
    const bool hot = e == 0 || e == 3;
    const float center = hot ? 6.0f / static_cast<float>(h) : 0.0f;
    const auto row = gate.begin() + e * h;
    const double mean = std::accumulate(row, row + h, 0.0) / h;
    EXPECT_NEAR(mean, center, 1e-6) << "gate row " << e;
    // Uniform noise of ± width, less its own mean: spread and variance.
    const auto [lo, hi] = std::minmax_element(row, row + h);
    EXPECT_LE(*hi - *lo, 2 * width * 1.001f) << "gate row " << e;
    double var = 0;
    for (auto v = row; v != row + h; ++v) var += (*v - mean) * (*v - mean);
    EXPECT_NEAR(var / h, width * width / 3, 0.35 * width * width / 3)
        << "gate row " << e;
  }
  ExpectUniform(ReadTensor(tmp.path(), EmbedTokensName()), 1, 1,
                "embedding with hot experts");
  TempDir plain;
  GeneratorSpec plain_spec = spec;
  plain_spec.hot_experts.clear();
  plain_spec.hot_gate_bias = 0;
  ASSERT_TRUE(GenerateModel(plain.path(), plain_spec).ok());
  EXPECT_EQ(ReadTensor(tmp.path(), ExpertTensorName(c, 1, 2, FfnProj::kUp)),
            ReadTensor(plain.path(), ExpertTensorName(c, 1, 2, FfnProj::kUp)));

  // Top-k over hidden states shaped like normalised embeddings: a shared
  // component of 1 plus noise of ± 1, scaled to unit RMS.
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> noise(-1, 1);
  std::vector<int> picked(c.num_experts, 0);
  constexpr int kTokens = 400;
  for (int t = 0; t < kTokens; ++t) {
    std::vector<float> x(h);
    double sum_sq = 0;
    for (float& v : x) {
      v = 1 + noise(rng);
      sum_sq += v * v;
    }
    const float rms = static_cast<float>(std::sqrt(sum_sq / h));
    for (float& v : x) v /= rms;
    std::vector<std::pair<float, int>> logits;
    for (int e = 0; e < c.num_experts; ++e) {
      float dot = 0;
      for (int64_t i = 0; i < h; ++i) dot += gate[e * h + i] * x[i];
      logits.emplace_back(-dot, e);
    }
    std::sort(logits.begin(), logits.end());
    for (int k = 0; k < c.num_experts_per_tok; ++k) ++picked[logits[k].second];
  }
  const double even = static_cast<double>(kTokens) * c.num_experts_per_tok /
                      c.num_experts;
  for (int e = 0; e < c.num_experts; ++e) {
    std::printf("[hot experts] expert %d picked for %d of %d tokens (even "
                "share %.0f)\n",
                e, picked[e], kTokens, even);
    if (e == 0 || e == 3) {
      EXPECT_GT(picked[e], kTokens * 3 / 4) << "hot expert " << e;
    } else {
      EXPECT_LT(picked[e], even / 2) << "cold expert " << e;
    }
  }
}

TEST(GenerateModelValuesTest, TiedEmbeddingsHaveNoLmHead) {
  TempDir tmp;
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kMixtral);
  spec.config.tie_word_embeddings = true;
  ASSERT_TRUE(GenerateModel(tmp.path(), spec).ok());
  EXPECT_EQ(TensorsOnDisk(tmp.path()).count(LmHeadName()), 0u);
  auto checkpoint = Checkpoint::Open(tmp.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_TRUE((*checkpoint)->config().tie_word_embeddings);
}

TEST(GenerateModelValuesTest, QkNormShapesFollowTheFamily) {
  for (ModelFamily family : {ModelFamily::kQwen3Moe, ModelFamily::kOlmoe}) {
    TempDir tmp;
    GeneratorSpec spec;
    spec.config = SmallConfig(family);
    ASSERT_TRUE(GenerateModel(tmp.path(), spec).ok());
    auto file = SafetensorsFile::Open(tmp.Join("model.safetensors"));
    ASSERT_TRUE(file.ok());
    const auto& entries = (*file)->entries();
    const ModelConfig& c = spec.config;
    const std::vector<int64_t> q_shape = family == ModelFamily::kQwen3Moe
                                             ? std::vector<int64_t>{c.head_dim}
                                             : std::vector<int64_t>{c.q_dim()};
    const std::vector<int64_t> k_shape = family == ModelFamily::kQwen3Moe
                                             ? std::vector<int64_t>{c.head_dim}
                                             : std::vector<int64_t>{c.kv_dim()};
    EXPECT_EQ(entries.at(AttentionTensorName(1, "q_norm", "weight")).shape,
              q_shape);
    EXPECT_EQ(entries.at(AttentionTensorName(1, "k_norm", "weight")).shape,
              k_shape);
    EXPECT_EQ(entries.at(AttentionTensorName(1, "q_proj", "weight")).shape,
              (std::vector<int64_t>{c.q_dim(), c.hidden_size}));
    EXPECT_EQ(entries.at(AttentionTensorName(1, "o_proj", "weight")).shape,
              (std::vector<int64_t>{c.hidden_size, c.q_dim()}));
  }
}

// ---------------------------------------------------------------------------
// Determinism.

TEST(GenerateModelDeterminismTest, SameSeedSameBytesOtherSeedOtherBytes) {
  TempDir a, b, c;
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kQwen3Moe);
  spec.num_shards = 2;
  spec.seed = 7;
  ASSERT_TRUE(GenerateModel(a.path(), spec).ok());
  ASSERT_TRUE(GenerateModel(b.path(), spec).ok());
  spec.seed = 8;
  ASSERT_TRUE(GenerateModel(c.path(), spec).ok());
  ASSERT_EQ(FilesIn(a.path()), FilesIn(b.path()));
  for (const std::string& name : FilesIn(a.path())) {
    EXPECT_EQ(ReadFileOrDie(a.Join(name)), ReadFileOrDie(b.Join(name))) << name;
    if (absl::EndsWith(name, ".safetensors")) {
      EXPECT_NE(ReadFileOrDie(a.Join(name)), ReadFileOrDie(c.Join(name)))
          << name;
    } else {
      EXPECT_EQ(ReadFileOrDie(a.Join(name)), ReadFileOrDie(c.Join(name)))
          << name;
    }
  }
}

TEST(GenerateModelDeterminismTest, ValuesDoNotDependOnSharding) {
  TempDir one, three;
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kMixtral);
  ASSERT_TRUE(GenerateModel(one.path(), spec).ok());
  spec.num_shards = 3;
  ASSERT_TRUE(GenerateModel(three.path(), spec).ok());
  auto a = Checkpoint::Open(one.path());
  auto b = Checkpoint::Open(three.path());
  ASSERT_TRUE(a.ok() && b.ok());
  for (const auto& [name, file] : TensorsOnDisk(one.path())) {
    auto file_one = SafetensorsFile::Open(one.Join("model.safetensors"));
    const std::vector<int64_t> shape = (*file_one)->entries().at(name).shape;
    absl::StatusOr<TensorView> x = (*a)->Get(name, shape);
    absl::StatusOr<TensorView> y = (*b)->Get(name, shape);
    ASSERT_TRUE(x.ok() && y.ok()) << name;
    EXPECT_EQ(0, std::memcmp(x->data, y->data, x->NumBytes())) << name;
  }
}

TEST(GenerateModelDeterminismTest, RegeneratingReplacesOldShards) {
  TempDir tmp;
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kOlmoe);
  spec.num_shards = 3;
  ASSERT_TRUE(GenerateModel(tmp.path(), spec).ok());
  spec.num_shards = 1;
  ASSERT_TRUE(GenerateModel(tmp.path(), spec).ok());
  EXPECT_EQ(FilesIn(tmp.path()),
            (std::vector<std::string>{"config.json", "model.safetensors"}));
}

// ---------------------------------------------------------------------------
// Small configs.

TEST(SmallConfigTest, MatchesTheFixtures) {
  for (const auto& [family, fixture] :
       {std::pair{ModelFamily::kMixtral, "tiny-mixtral"},
        std::pair{ModelFamily::kQwen2Moe, "tiny-qwen2-moe"}}) {
    absl::StatusOr<ModelConfig> want = LoadModelConfig(FixtureDir(fixture));
    ASSERT_TRUE(want.ok()) << want.status();
    SCOPED_TRACE(fixture);
    ExpectSameConfig(*want, SmallConfig(family));
  }
}

TEST(SmallConfigTest, ExercisesEachFamilysFeatures) {
  const ModelConfig qwen2 = SmallConfig(ModelFamily::kQwen2Moe);
  EXPECT_LT(qwen2.NumMoeLayers(), qwen2.num_layers);
  EXPECT_TRUE(qwen2.has_shared_expert());
  EXPECT_TRUE(qwen2.qkv_bias);
  const ModelConfig qwen3 = SmallConfig(ModelFamily::kQwen3Moe);
  EXPECT_NE(qwen3.head_dim, qwen3.hidden_size / qwen3.num_heads);
  EXPECT_EQ(qwen3.qk_norm, QkNorm::kPerHead);
  EXPECT_TRUE(qwen3.norm_topk_prob);
  const ModelConfig olmoe = SmallConfig(ModelFamily::kOlmoe);
  EXPECT_EQ(olmoe.qk_norm, QkNorm::kWholeProjection);
  EXPECT_FALSE(olmoe.norm_topk_prob);
  const ModelConfig v2 = SmallConfig(ModelFamily::kDeepseekV2);
  EXPECT_TRUE(v2.uses_mla());
  EXPECT_EQ(v2.mla.q_lora_rank, 0);
  EXPECT_FALSE(v2.IsMoeLayer(0));  // first_k_dense_replace
  EXPECT_TRUE(v2.has_shared_expert());
  EXPECT_FALSE(v2.shared_expert_gated);
  const ModelConfig v3 = SmallConfig(ModelFamily::kDeepseekV3);
  EXPECT_GT(v3.mla.q_lora_rank, 0);
  EXPECT_EQ(v3.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_EQ(v3.topk_method, TopkMethod::kNoauxTc);
  EXPECT_LT(v3.topk_group, v3.n_group);
  EXPECT_TRUE(v3.yarn.enabled());
  for (ModelFamily f : kFamilies) {
    const ModelConfig c = SmallConfig(f);
    if (c.uses_mla()) {
      EXPECT_EQ(c.num_kv_heads, c.num_heads) << FamilyName(f);  // one latent
    } else {
      EXPECT_LT(c.num_kv_heads, c.num_heads) << FamilyName(f);  // GQA
    }
    absl::StatusOr<ModelConfig> parsed = ParseModelConfig(ModelConfigToJson(c));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    ExpectSameConfig(c, *parsed);
  }
}

// ---------------------------------------------------------------------------
// Invalid specs.

struct BadSpec {
  const char* field;
  std::function<void(GeneratorSpec&)> mutate;
};

TEST(GenerateModelValidationTest, RejectsInvalidSpecsNamingTheField) {
  const BadSpec cases[] = {
      {"hidden_size", [](GeneratorSpec& s) { s.config.hidden_size = 0; }},
      {"num_layers", [](GeneratorSpec& s) { s.config.num_layers = -1; }},
      {"vocab_size", [](GeneratorSpec& s) { s.config.vocab_size = 0; }},
      {"num_kv_heads", [](GeneratorSpec& s) { s.config.num_kv_heads = 3; }},
      {"head_dim", [](GeneratorSpec& s) { s.config.head_dim = 15; }},
      {"num_experts_per_tok",
       [](GeneratorSpec& s) { s.config.num_experts_per_tok = 9; }},
      {"expert_intermediate_size",
       [](GeneratorSpec& s) { s.config.expert_intermediate_size = 0; }},
      {"shared_expert_intermediate_size",
       [](GeneratorSpec& s) { s.config.shared_expert_intermediate_size = 0; }},
      {"dense_intermediate_size",
       [](GeneratorSpec& s) { s.config.dense_intermediate_size = 0; }},
      {"mlp_only_layers",
       [](GeneratorSpec& s) { s.config.mlp_only_layers = {5}; }},
      {"eos_token_ids",
       [](GeneratorSpec& s) { s.config.eos_token_ids = {512}; }},
      {"o_bias", [](GeneratorSpec& s) { s.config.o_bias = true; }},
      {"qk_norm",
       [](GeneratorSpec& s) { s.config.qk_norm = QkNorm::kPerHead; }},
      {"num_shards", [](GeneratorSpec& s) { s.num_shards = 0; }},
      {"num_shards", [](GeneratorSpec& s) { s.num_shards = 100000; }},
      {"hot_experts[1] 8 is outside",
       [](GeneratorSpec& s) {
         s.hot_experts = {0, 8};
         s.hot_gate_bias = 1;
       }},
      {"hot_experts[1] expert 2 is listed twice",
       [](GeneratorSpec& s) {
         s.hot_experts = {2, 2};
         s.hot_gate_bias = 1;
       }},
      {"hot_gate_bias must be positive",
       [](GeneratorSpec& s) {
         s.hot_experts = {1};
         s.hot_gate_bias = 0;
       }},
      {"hot_gate_bias needs hot_experts",
       [](GeneratorSpec& s) { s.hot_gate_bias = 2; }},
  };
  for (const BadSpec& bad : cases) {
    TempDir tmp;
    GeneratorSpec spec;
    spec.config = SmallConfig(ModelFamily::kQwen2Moe);
    bad.mutate(spec);
    const absl::Status status = GenerateModel(tmp.path(), spec);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << bad.field << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(bad.field));
    EXPECT_TRUE(FilesIn(tmp.path()).empty()) << bad.field << ": wrote files";
  }
}

TEST(GenerateModelValidationTest, RejectsFieldsTheFamilyCannotExpress) {
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kMixtral);
  spec.config.qkv_bias = true;
  TempDir tmp;
  EXPECT_THAT(GenerateModel(tmp.path(), spec).message(), HasSubstr("qkv_bias"));
  spec.config = SmallConfig(ModelFamily::kMixtral);
  spec.config.norm_topk_prob = false;
  EXPECT_THAT(GenerateModel(tmp.path(), spec).message(),
              HasSubstr("norm_topk_prob"));
  spec.config = SmallConfig(ModelFamily::kOlmoe);
  spec.config.mlp_only_layers = {0};
  EXPECT_THAT(GenerateModel(tmp.path(), spec).message(),
              HasSubstr("mlp_only_layers"));
  spec.config = SmallConfig(ModelFamily::kQwen3Moe);
  spec.config.dense_intermediate_size = 64;  // but no dense layer
  EXPECT_THAT(GenerateModel(tmp.path(), spec).message(),
              HasSubstr("dense_intermediate_size"));
}

TEST(GenerateModelValidationTest, UnwritableDirectoryIsAnErrorNamingIt) {
  TempDir tmp;
  moe::testing::WriteFileOrDie(tmp.Join("file"), "x");
  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kMixtral);
  const absl::Status status = GenerateModel(tmp.Join("file/sub"), spec);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(tmp.Join("file/sub")));
}

// ---------------------------------------------------------------------------
// The safetensors writer.

TensorToWrite Constant(const std::string& name, std::vector<int64_t> shape,
                       char byte, DType dtype = DType::kBF16) {
  TensorToWrite t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const int64_t bytes = t.NumBytes();
  t.fill = [bytes, byte](char* dst) { std::memset(dst, byte, bytes); };
  return t;
}

TEST(SafetensorsWriterTest, WritesAnAlignedReadableFile) {
  TempDir tmp;
  const std::string path = tmp.Join("x.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {Constant("a", {3}, 1),
                                      Constant("b", {2, 5}, 2, DType::kF32),
                                      Constant("empty", {0, 4}, 3)})
                  .ok());
  const std::string bytes = ReadFileOrDie(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_len + 6 + 40);
  nlohmann::json header =
      nlohmann::json::parse(bytes.substr(8, header_len), nullptr, false);
  ASSERT_FALSE(header.is_discarded());
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["b"]["dtype"], "F32");
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({0, 6}));
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({6, 46}));
  EXPECT_EQ(bytes[8 + header_len], 1);
  EXPECT_EQ(bytes[8 + header_len + 6], 2);

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->entries().size(), 3u);
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
}

TEST(SafetensorsWriterTest, ReportsProgressUpToTheTotal) {
  TempDir tmp;
  std::vector<std::pair<int64_t, int64_t>> calls;
  // 20 MB: more than one write chunk.
  ASSERT_TRUE(
      WriteSafetensors(
          tmp.Join("x.safetensors"), {Constant("big", {10 << 20}, 7)},
          [&](int64_t done, int64_t total) { calls.emplace_back(done, total); })
          .ok());
  ASSERT_GE(calls.size(), 3u);
  for (size_t i = 1; i < calls.size(); ++i) {
    EXPECT_GE(calls[i].first, calls[i - 1].first);
  }
  EXPECT_EQ(calls.back(), std::make_pair(int64_t{20 << 20}, int64_t{20 << 20}));
}

TEST(SafetensorsWriterTest, ErrorsNameThePath) {
  TempDir tmp;
  const std::string missing_dir = tmp.Join("no/such/dir/x.safetensors");
  absl::Status status = WriteSafetensors(missing_dir, {Constant("a", {1}, 0)});
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(missing_dir));

  status = WriteSafetensors(tmp.Join("dup.safetensors"),
                            {Constant("a", {1}, 0), Constant("a", {2}, 0)});
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("\"a\""));
  EXPECT_TRUE(FilesIn(tmp.path()).empty());
}

// Writes 4 MB under a 1 MB file size limit (EFBIG, standing in for a full
// disk) and exits 0 iff that failed and left no file. Runs in a death-test
// child, since the limit applies to the whole process.
[[noreturn]] void WriteOverFileSizeLimit(const std::string& path) {
  std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit;
  limit.rlim_cur = limit.rlim_max = 1 << 20;
  setrlimit(RLIMIT_FSIZE, &limit);
  const absl::Status status =
      WriteSafetensors(path, {Constant("big", {4 << 20}, 1)});
  const bool leftover = std::filesystem::exists(path) ||
                        std::filesystem::exists(path + ".partial");
  std::fprintf(stderr, "status: %s leftover: %d\n", status.ToString().c_str(),
               leftover);
  std::exit(!status.ok() && !leftover ? 0 : 1);
}

TEST(SafetensorsWriterTest, WriteFailureIsAnErrorAndLeavesNoFile) {
  TempDir tmp;
  const std::string path = tmp.Join("x.safetensors");
  EXPECT_EXIT(WriteOverFileSizeLimit(path), ::testing::ExitedWithCode(0),
              HasSubstr(path));
}

// ---------------------------------------------------------------------------
// moe-mkmodel.

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult RunMkmodel(const std::string& args) {
  const std::string command = absl::StrCat(MOE_MKMODEL_BIN, " ", args, " 2>&1");
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    result.output.append(buffer, n);
  }
  const int status = pclose(pipe);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

TEST(MkmodelTest, WritesTheSameCheckpointAsTheLibrary) {
  TempDir tool_dir, lib_dir;
  const CommandResult run = RunMkmodel(absl::StrCat(
      "--out ", tool_dir.path(),
      " --family qwen2_moe --hidden 32 --heads 4 --kv-heads 2 --layers 2 "
      "--experts 4 --top_k 2 --shards 2 --dtype f32 --seed 3 --quiet"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("wrote " + tool_dir.path()));

  GeneratorSpec spec;
  spec.config = SmallConfig(ModelFamily::kQwen2Moe);
  spec.config.hidden_size = 32;
  spec.config.head_dim = 8;  // hidden / heads once --hidden is given
  spec.config.num_layers = 2;
  spec.config.num_experts = 4;
  spec.config.num_experts_per_tok = 2;
  spec.dtype = DType::kF32;
  spec.num_shards = 2;
  spec.seed = 3;
  ASSERT_TRUE(GenerateModel(lib_dir.path(), spec).ok());
  ASSERT_EQ(FilesIn(tool_dir.path()), FilesIn(lib_dir.path()));
  for (const std::string& name : FilesIn(lib_dir.path())) {
    EXPECT_TRUE(ReadFileOrDie(tool_dir.Join(name)) ==
                ReadFileOrDie(lib_dir.Join(name)))
        << name;
  }
  auto checkpoint = Checkpoint::Open(tool_dir.path());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto weights =
      LoadModelWeights(std::shared_ptr<Checkpoint>(std::move(*checkpoint)),
                       WeightSelection::Full());
  EXPECT_TRUE(weights.ok()) << weights.status();
}

TEST(MkmodelTest, BadFlagsExitWithStatus2NamingTheFlag) {
  TempDir tmp;
  const std::string out = " --out " + tmp.Join("m");
  const std::pair<std::string, std::string> cases[] = {
      {out + " --family gpt2",
       "moe-mkmodel: --family: unknown family \"gpt2\" (mixtral, qwen2_moe, "
       "qwen3_moe, olmoe, deepseek_v2, deepseek_v3)"},
      {out + " --dtype f8", "--dtype: unknown dtype \"f8\""},
      {out + " --hidden abc", "--hidden: invalid value \"abc\""},
      {out + " --bogus 1", "unknown flag --bogus"},
      {"--family olmoe", "--out: is required"},
      {out + " --kv_heads 3", "--kv_heads:"},
      {out + " --top-k 9", "--top_k:"},
      {out + " --shards 0", "--shards:"},
      {out + " --shared_intermediate 8", "--shared_intermediate: mixtral"},
      {out + " --family qwen3_moe --mlp_only_layers 0,x",
       "--mlp_only_layers: \"x\""},
      {out + " --dense_intermediate 8",
       "--dense_intermediate: the model has no"},
      {out + " --norm_topk_prob=false", "--norm_topk_prob:"},
      {out + " --hot_experts 0,x", "--hot_experts: \"x\" is not an expert"},
      {out + " --hot_experts 0,99", "--hot_experts: GeneratorSpec: "
                                    "hot_experts[1] 99 is outside"},
      {out + " --hot_experts 0 --hot_gate_bias -1",
       "--hot_gate_bias: GeneratorSpec: hot_gate_bias must be positive"},
      {out + " extra", "unexpected argument \"extra\""},
  };
  for (const auto& [args, message] : cases) {
    const CommandResult run = RunMkmodel(args);
    EXPECT_EQ(run.exit_code, 2) << args << "\n" << run.output;
    EXPECT_THAT(run.output, HasSubstr(message)) << args;
  }
  EXPECT_FALSE(std::filesystem::exists(tmp.Join("m/config.json")));
}

TEST(MkmodelTest, DashedAndBareBooleanFlags) {
  TempDir tmp;
  CommandResult run = RunMkmodel(absl::StrCat(
      "--out=", tmp.path(),
      " --family olmoe --norm-topk-prob --tie-embeddings --max-positions 256 "
      "--quiet"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  absl::StatusOr<ModelConfig> config = LoadModelConfig(tmp.path());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->norm_topk_prob);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->max_position_embeddings, 256);

  run = RunMkmodel(absl::StrCat("--out ", tmp.path(),
                                " --family qwen3_moe --nonorm_topk_prob "
                                "--layers 3 --mlp_only_layers 1 --quiet"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  config = LoadModelConfig(tmp.path());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->norm_topk_prob);
  EXPECT_EQ(config->mlp_only_layers, std::vector<int>{1});
  // The dense size defaults to the expert size when the small config has none.
  EXPECT_EQ(config->dense_intermediate_size, config->expert_intermediate_size);
  EXPECT_EQ(config->head_dim, 32);
}

TEST(MkmodelTest, HelpListsTheFlags) {
  const CommandResult run = RunMkmodel("--help");
  EXPECT_THAT(run.output, HasSubstr("--expert_intermediate"));
  EXPECT_THAT(run.output, HasSubstr("--mlp_only_layers"));
}

}  // namespace
}  // namespace moe
