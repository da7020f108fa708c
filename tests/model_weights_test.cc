// Tests of core/model_weights.h on the fixture checkpoints: which views each
// WeightSelection fills, lazy shard opening, the active-bytes count, and
// copies of tiny-mixtral broken on purpose (missing tensors, wrong shapes or
// dtypes, config disagreeing with the weights).
#include "core/model_weights.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/safetensors_builder.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::BuildSafetensors;
using ::moe::testing::FixtureDir;
using ::moe::testing::MakeTensor;
using ::moe::testing::RawTensor;
using ::moe::testing::ReadRawTensors;
using ::moe::testing::ReadFileOrDie;
using ::moe::testing::TempDir;
using ::moe::testing::WriteFileOrDie;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using Json = nlohmann::json;
using Shape = std::vector<int64_t>;

constexpr char kSingle[] = "model.safetensors";

std::shared_ptr<Checkpoint> OpenFixture(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
      Checkpoint::Open(FixtureDir(name));
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  return ckpt.ok() ? std::shared_ptr<Checkpoint>(std::move(*ckpt)) : nullptr;
}

// Loads `selection` from a freshly opened fixture.
absl::StatusOr<ModelWeights> LoadFixture(const std::string& name,
                                         const WeightSelection& selection) {
  std::shared_ptr<Checkpoint> ckpt = OpenFixture(name);
  if (ckpt == nullptr) return absl::InternalError("fixture did not open");
  return LoadModelWeights(ckpt, selection);
}

void ExpectShape(const TensorView& t, const Shape& shape, const char* what) {
  EXPECT_FALSE(t.empty()) << what;
  EXPECT_EQ(t.shape, shape) << what;
}

void ExpectFfn(const FfnWeights& f, int64_t inter, int64_t hidden) {
  ExpectShape(f.gate, {inter, hidden}, "gate");
  ExpectShape(f.up, {inter, hidden}, "up");
  ExpectShape(f.down, {hidden, inter}, "down");
}

// Every element of `view` equals the tensor `name` read independently.
void ExpectSameValues(const TensorView& view, const std::string& file,
                      const std::string& name) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      SafetensorsFile::Open(file);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<TensorView> expected = (*f)->Get(name);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(view.shape, expected->shape) << name;
  ASSERT_EQ(view.dtype, expected->dtype) << name;
  for (int64_t i = 0; i < view.NumElements(); ++i) {
    ASSERT_EQ(view.At(i), expected->At(i)) << name << " element " << i;
  }
}

TEST(ModelWeightsTest, MixtralFull) {
  absl::StatusOr<ModelWeights> w =
      LoadFixture("tiny-mixtral", WeightSelection::Full());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_NE(w->checkpoint, nullptr);
  EXPECT_EQ(w->config.family, ModelFamily::kMixtral);
  ExpectShape(w->embed_tokens, {512, 64}, "embed");
  ExpectShape(w->final_norm, {64}, "final_norm");
  ExpectShape(w->lm_head, {512, 64}, "lm_head");
  EXPECT_NE(w->lm_head.data, w->embed_tokens.data);  // not tied
  ASSERT_EQ(w->layers.size(), 2u);
  for (const LayerWeights& lw : w->layers) {
    ExpectShape(lw.input_norm, {64}, "input_norm");
    ExpectShape(lw.post_attention_norm, {64}, "post_attention_norm");
    ExpectShape(lw.attention.q, {64, 64}, "q");
    ExpectShape(lw.attention.k, {32, 64}, "k");
    ExpectShape(lw.attention.v, {32, 64}, "v");
    ExpectShape(lw.attention.o, {64, 64}, "o");
    EXPECT_TRUE(lw.attention.q_bias.empty());
    EXPECT_TRUE(lw.attention.k_bias.empty());
    EXPECT_TRUE(lw.attention.v_bias.empty());
    EXPECT_TRUE(lw.attention.o_bias.empty());
    EXPECT_TRUE(lw.attention.q_norm.empty());
    EXPECT_TRUE(lw.attention.k_norm.empty());
    ExpectShape(lw.router_gate, {8, 64}, "router_gate");
    EXPECT_FALSE(lw.dense_mlp.has_value());
    EXPECT_FALSE(lw.shared_expert.has_value());
    EXPECT_TRUE(lw.shared_expert_gate.empty());
    ASSERT_EQ(lw.experts.size(), 8u);
    for (const auto& [e, ffn] : lw.experts) ExpectFfn(ffn, 96, 64);
  }
  // Mixtral names: w1 = gate, w3 = up, w2 = down.
  const std::string file = FixtureDir("tiny-mixtral") + "/model.safetensors";
  const FfnWeights& e5 = w->layers[1].experts.at(5);
  ExpectSameValues(e5.gate, file,
                   "model.layers.1.block_sparse_moe.experts.5.w1.weight");
  ExpectSameValues(e5.up, file,
                   "model.layers.1.block_sparse_moe.experts.5.w3.weight");
  ExpectSameValues(e5.down, file,
                   "model.layers.1.block_sparse_moe.experts.5.w2.weight");
  ExpectSameValues(w->layers[0].router_gate, file,
                   "model.layers.0.block_sparse_moe.gate.weight");
  ExpectSameValues(w->layers[1].attention.k, file,
                   "model.layers.1.self_attn.k_proj.weight");
  ExpectSameValues(w->lm_head, file, "lm_head.weight");
}

TEST(ModelWeightsTest, MixtralNonExpertOnly) {
  absl::StatusOr<ModelWeights> w =
      LoadFixture("tiny-mixtral", WeightSelection::NonExpertOnly());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_FALSE(w->embed_tokens.empty());
  EXPECT_FALSE(w->final_norm.empty());
  EXPECT_FALSE(w->lm_head.empty());
  ASSERT_EQ(w->layers.size(), 2u);
  for (const LayerWeights& lw : w->layers) {
    EXPECT_FALSE(lw.input_norm.empty());
    EXPECT_FALSE(lw.post_attention_norm.empty());
    EXPECT_FALSE(lw.attention.q.empty());
    EXPECT_FALSE(lw.attention.o.empty());
    EXPECT_TRUE(lw.router_gate.empty());
    EXPECT_THAT(lw.experts, IsEmpty());
  }
}

TEST(ModelWeightsTest, MixtralGatesOnly) {
  absl::StatusOr<ModelWeights> w =
      LoadFixture("tiny-mixtral", WeightSelection::GatesOnly());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(w->embed_tokens.empty());
  EXPECT_TRUE(w->final_norm.empty());
  EXPECT_TRUE(w->lm_head.empty());
  ASSERT_EQ(w->layers.size(), 2u);
  for (const LayerWeights& lw : w->layers) {
    EXPECT_TRUE(lw.input_norm.empty());
    EXPECT_TRUE(lw.attention.q.empty());
    EXPECT_TRUE(lw.attention.k.empty());
    ExpectShape(lw.router_gate, {8, 64}, "router_gate");
    EXPECT_THAT(lw.experts, IsEmpty());
  }
}

TEST(ModelWeightsTest, MixtralSelectedExperts) {
  absl::StatusOr<ModelWeights> w =
      LoadFixture("tiny-mixtral", WeightSelection::Experts({{0, 3}, {1, 5}}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_TRUE(w->embed_tokens.empty());
  EXPECT_TRUE(w->lm_head.empty());
  ASSERT_EQ(w->layers.size(), 2u);
  ASSERT_EQ(w->layers[0].experts.size(), 1u);
  ASSERT_EQ(w->layers[1].experts.size(), 1u);
  ASSERT_TRUE(w->layers[0].experts.count(3));
  ASSERT_TRUE(w->layers[1].experts.count(5));
  ExpectFfn(w->layers[0].experts.at(3), 96, 64);
  ExpectFfn(w->layers[1].experts.at(5), 96, 64);
  for (const LayerWeights& lw : w->layers) {
    EXPECT_TRUE(lw.router_gate.empty());
    EXPECT_TRUE(lw.attention.q.empty());
    EXPECT_TRUE(lw.input_norm.empty());
  }
  const std::string file = FixtureDir("tiny-mixtral") + "/model.safetensors";
  ExpectSameValues(w->layers[0].experts.at(3).down, file,
                   "model.layers.0.block_sparse_moe.experts.3.w2.weight");
}

TEST(ModelWeightsTest, ExpertOutsideTheModelIsRejected) {
  struct Case {
    std::pair<int, int> expert;
    std::string kind;   // what is out of range: "expert" or "layer"
    std::string value;  // the offending number
  };
  for (const Case& c :
       {Case{{0, 8}, "expert", "8"}, Case{{1, 100}, "expert", "100"},
        Case{{0, -1}, "expert", "-1"}, Case{{2, 0}, "layer", "2"},
        Case{{-1, 0}, "layer", "-1"}}) {
    SCOPED_TRACE(c.kind + " " + c.value);
    absl::StatusOr<ModelWeights> w = LoadFixture(
        "tiny-mixtral", WeightSelection::Experts({{0, 1}, c.expert}));
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(w.status().message(),
                AllOf(HasSubstr(c.kind), HasSubstr(c.value)));
  }
}

TEST(ModelWeightsTest, Qwen2MoeFull) {
  absl::StatusOr<ModelWeights> w =
      LoadFixture("tiny-qwen2-moe", WeightSelection::Full());
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->layers.size(), 3u);
  for (int l = 0; l < 3; ++l) {
    SCOPED_TRACE(l);
    const LayerWeights& lw = w->layers[l];
    ExpectShape(lw.attention.q_bias, {64}, "q_bias");
    ExpectShape(lw.attention.k_bias, {32}, "k_bias");
    ExpectShape(lw.attention.v_bias, {32}, "v_bias");
    EXPECT_TRUE(lw.attention.o_bias.empty());
    if (l == 1) {  // dense
      ASSERT_TRUE(lw.dense_mlp.has_value());
      ExpectFfn(*lw.dense_mlp, 96, 64);
      EXPECT_TRUE(lw.router_gate.empty());
      EXPECT_THAT(lw.experts, IsEmpty());
      EXPECT_FALSE(lw.shared_expert.has_value());
    } else {
      EXPECT_FALSE(lw.dense_mlp.has_value());
      ExpectShape(lw.router_gate, {8, 64}, "router_gate");
      ASSERT_EQ(lw.experts.size(), 8u);
      for (const auto& [e, ffn] : lw.experts) ExpectFfn(ffn, 48, 64);
      ASSERT_TRUE(lw.shared_expert.has_value());
      ExpectFfn(*lw.shared_expert, 96, 64);
      ExpectShape(lw.shared_expert_gate, {1, 64}, "shared_expert_gate");
    }
  }
  const std::string dir = FixtureDir("tiny-qwen2-moe");
  ExpectSameValues(w->layers[2].experts.at(3).up,
                   dir + "/model-00003-of-00003.safetensors",
                   "model.layers.2.mlp.experts.3.up_proj.weight");
  ExpectSameValues(w->layers[1].dense_mlp->down,
                   dir + "/model-00002-of-00003.safetensors",
                   "model.layers.1.mlp.down_proj.weight");
  ExpectSameValues(w->layers[0].shared_expert_gate,
                   dir + "/model-00002-of-00003.safetensors",
                   "model.layers.0.mlp.shared_expert_gate.weight");
}

TEST(ModelWeightsTest, Qwen2MoeOpensOnlyTheShardsItNeeds) {
  struct Case {
    WeightSelection selection;
    std::vector<std::string> shards;
  };
  const std::string s1 = "model-00001-of-00003.safetensors";
  const std::string s2 = "model-00002-of-00003.safetensors";
  const std::string s3 = "model-00003-of-00003.safetensors";
  const Case cases[] = {
      {WeightSelection::Experts({{0, 1}}), {s1}},
      {WeightSelection::Experts({{2, 5}}), {s3}},
      {WeightSelection::Experts({{0, 7}, {2, 0}}), {s1, s2}},
      {WeightSelection::GatesOnly(), {s1, s3}},
      {WeightSelection::Full(), {s1, s2, s3}},
  };
  for (const Case& c : cases) {
    std::shared_ptr<Checkpoint> ckpt = OpenFixture("tiny-qwen2-moe");
    ASSERT_NE(ckpt, nullptr);
    EXPECT_THAT(ckpt->OpenedShards(), IsEmpty());
    absl::StatusOr<ModelWeights> w = LoadModelWeights(ckpt, c.selection);
    ASSERT_TRUE(w.ok()) << w.status();
    std::vector<std::string> opened = ckpt->OpenedShards();
    std::sort(opened.begin(), opened.end());
    EXPECT_EQ(opened, c.shards);
  }
}

TEST(ModelWeightsTest, DenseLayerHasNoExperts) {
  absl::StatusOr<ModelWeights> w =
      LoadFixture("tiny-qwen2-moe", WeightSelection::Experts({{1, 0}}));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), AllOf(HasSubstr("layer"), HasSubstr("1")));
}

// ActiveWeightBytesPerToken, from the config by hand: per layer the norms,
// attention, router gate and top-k experts; the final norm, lm_head and one
// embedding row.
TEST(ModelWeightsTest, ActiveBytesMixtral) {
  absl::StatusOr<ModelWeights> w =
      LoadFixture("tiny-mixtral", WeightSelection::Full());
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = w->config;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t per_layer =
      2 * h + qd * h + 2 * kvd * h + h * qd + int64_t{c.num_experts} * h +
      c.num_experts_per_tok * 3 * c.expert_intermediate_size * h;
  const int64_t elements =
      c.num_layers * per_layer + h + int64_t{c.vocab_size} * h + h;
  EXPECT_EQ(ActiveWeightBytesPerToken(*w), 2 * elements);  // BF16
  EXPECT_EQ(ActiveWeightBytesPerToken(*w), 264960);
}

TEST(ModelWeightsTest, ActiveBytesQwen2Moe) {
  absl::StatusOr<ModelWeights> w =
      LoadFixture("tiny-qwen2-moe", WeightSelection::Full());
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = w->config;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t attention = qd * h + qd + 2 * (kvd * h + kvd) + h * qd;
  const int64_t moe_layer =
      2 * h + attention + int64_t{c.num_experts} * h +
      3 * int64_t{c.shared_expert_intermediate_size} * h + h +
      c.num_experts_per_tok * 3 * c.expert_intermediate_size * h;
  const int64_t dense_layer =
      2 * h + attention + 3 * c.dense_intermediate_size * h;
  const int64_t elements =
      2 * moe_layer + dense_layer + h + int64_t{c.vocab_size} * h + h;
  EXPECT_EQ(ActiveWeightBytesPerToken(*w), 2 * elements);
}

// A copy of the tiny-mixtral fixture to break on purpose.
class BrokenMixtralTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tensors_ =
        ReadRawTensors(FixtureDir("tiny-mixtral") + "/model.safetensors");
    config_ =
        Json::parse(ReadFileOrDie(FixtureDir("tiny-mixtral") + "/config.json"));
  }

  void Write() {
    WriteFileOrDie(dir_.Join("config.json"), config_.dump(2));
    WriteFileOrDie(dir_.Join(kSingle), BuildSafetensors(tensors_));
  }

  RawTensor* Find(const std::string& name) {
    for (RawTensor& t : tensors_) {
      if (t.name == name) return &t;
    }
    ADD_FAILURE() << "fixture lacks " << name;
    return nullptr;
  }

  void Remove(const std::string& name) {
    const size_t before = tensors_.size();
    tensors_.erase(
        std::remove_if(tensors_.begin(), tensors_.end(),
                       [&](const RawTensor& t) { return t.name == name; }),
        tensors_.end());
    ASSERT_EQ(tensors_.size() + 1, before) << name;
  }

  absl::StatusOr<ModelWeights> Load(const WeightSelection& selection) {
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
        Checkpoint::Open(dir_.path());
    if (!ckpt.ok()) return ckpt.status();
    return LoadModelWeights(std::shared_ptr<Checkpoint>(std::move(*ckpt)),
                            selection);
  }

  TempDir dir_;
  std::vector<RawTensor> tensors_;
  Json config_;
};

TEST_F(BrokenMixtralTest, UnmodifiedCopyLoads) {
  Write();
  absl::StatusOr<ModelWeights> w = Load(WeightSelection::Full());
  ASSERT_TRUE(w.ok()) << w.status();
}

TEST_F(BrokenMixtralTest, MissingExpertTensor) {
  const std::string name =
      "model.layers.1.block_sparse_moe.experts.3.w2.weight";
  Remove(name);
  Write();
  absl::StatusOr<ModelWeights> w = Load(WeightSelection::Full());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(w.status().message(), HasSubstr(name));
  w = Load(WeightSelection::Experts({{1, 3}}));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr(name));
  // Selections that do not need it still load.
  EXPECT_TRUE(Load(WeightSelection::NonExpertOnly()).ok());
  EXPECT_TRUE(Load(WeightSelection::GatesOnly()).ok());
  EXPECT_TRUE(Load(WeightSelection::Experts({{1, 2}, {0, 3}})).ok());
}

TEST_F(BrokenMixtralTest, MissingNonExpertTensors) {
  for (const std::string name :
       {"model.norm.weight", "lm_head.weight", "model.embed_tokens.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.layers.1.block_sparse_moe.gate.weight"}) {
    SCOPED_TRACE(name);
    SetUp();
    Remove(name);
    Write();
    absl::StatusOr<ModelWeights> w = Load(WeightSelection::Full());
    ASSERT_FALSE(w.ok());
    EXPECT_THAT(w.status().message(), HasSubstr(name));
  }
}

TEST_F(BrokenMixtralTest, WrongShapeNamesTensorAndBothShapes) {
  const std::string name = "model.layers.1.self_attn.k_proj.weight";
  RawTensor* k = Find(name);
  ASSERT_NE(k, nullptr);
  ASSERT_EQ(k->shape, (Shape{32, 64}));
  k->shape = {64, 32};  // same bytes, transposed shape
  Write();
  absl::StatusOr<ModelWeights> w = Load(WeightSelection::NonExpertOnly());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(),
              AllOf(HasSubstr(name), HasSubstr(ShapeString({64, 32})),
                    HasSubstr(ShapeString({32, 64}))));
  EXPECT_TRUE(Load(WeightSelection::GatesOnly()).ok());
}

TEST_F(BrokenMixtralTest, WrongExpertShape) {
  const std::string name =
      "model.layers.0.block_sparse_moe.experts.6.w1.weight";
  RawTensor* t = Find(name);
  ASSERT_NE(t, nullptr);
  t->shape = {64, 96};
  Write();
  absl::StatusOr<ModelWeights> w = Load(WeightSelection::Experts({{0, 6}}));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(),
              AllOf(HasSubstr(name), HasSubstr(ShapeString({64, 96})),
                    HasSubstr(ShapeString({96, 64}))));
}

TEST_F(BrokenMixtralTest, F32InsteadOfBF16IsAccepted) {
  // Any supported dtype loads; the views report it.
  const std::string name = "model.norm.weight";
  RawTensor* t = Find(name);
  ASSERT_NE(t, nullptr);
  std::vector<float> values(64);
  for (int i = 0; i < 64; ++i) {
    values[i] = BF16ToFloat(static_cast<uint16_t>(
        static_cast<uint8_t>(t->bytes[2 * i]) |
        (static_cast<uint8_t>(t->bytes[2 * i + 1]) << 8)));
  }
  *t = MakeTensor(name, DType::kF32, {64}, values);
  Write();
  absl::StatusOr<ModelWeights> w = Load(WeightSelection::NonExpertOnly());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->final_norm.dtype, DType::kF32);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(w->final_norm.At(i), values[i]);
}

TEST_F(BrokenMixtralTest, UnsupportedDTypeNamesTheTensor) {
  const std::string name = "model.layers.0.input_layernorm.weight";
  RawTensor* t = Find(name);
  ASSERT_NE(t, nullptr);
  t->dtype = "I16";  // same size as BF16, so the file itself is consistent
  Write();
  absl::StatusOr<ModelWeights> w = Load(WeightSelection::NonExpertOnly());
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), AllOf(HasSubstr(name), HasSubstr("I16")));
}

TEST_F(BrokenMixtralTest, TiedEmbeddings) {
  config_["tie_word_embeddings"] = true;
  Remove("lm_head.weight");
  Write();
  absl::StatusOr<ModelWeights> w = Load(WeightSelection::NonExpertOnly());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->lm_head.data, w->embed_tokens.data);
  EXPECT_EQ(w->lm_head.shape, w->embed_tokens.shape);
}

TEST_F(BrokenMixtralTest, UnknownArchitecture) {
  config_["architectures"] = {"LlamaForCausalLM"};
  Write();
  absl::StatusOr<ModelWeights> w = Load(WeightSelection::Full());
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr("LlamaForCausalLM"));
}

TEST_F(BrokenMixtralTest, ConfigDisagreeingWithWeights) {
  config_["intermediate_size"] = 128;  // the stored experts are 96 wide
  Write();
  absl::StatusOr<ModelWeights> w = Load(WeightSelection::Experts({{0, 0}}));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(),
              AllOf(HasSubstr("model.layers.0.block_sparse_moe.experts.0."),
                    HasSubstr(ShapeString({96, 64})),
                    HasSubstr(ShapeString({128, 64}))));
}

}  // namespace
}  // namespace moe
