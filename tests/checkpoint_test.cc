// Tests of core/checkpoint.h and core/model_weights.h: single-file and
// sharded checkpoints, lazy shard opening, partial loading of the fixture
// models, and bad checkpoints failing with errors that name the tensor,
// shard or field.
#include "core/checkpoint.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/model_weights.h"
#include "core/safetensors.h"
#include "core/weight_names.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/safetensors_builder.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::BuildSafetensors;
using ::moe::testing::FixtureDir;
using ::moe::testing::LayOut;
using ::moe::testing::MakeTensor;
using ::moe::testing::RawTensor;
using ::moe::testing::ReadFileOrDie;
using ::moe::testing::SafetensorsBytes;
using ::moe::testing::TempDir;
using ::moe::testing::WriteFileOrDie;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using Json = nlohmann::json;
using Shape = std::vector<int64_t>;

constexpr char kSingle[] = "model.safetensors";
constexpr char kIndex[] = "model.safetensors.index.json";

// A small valid Mixtral config (the checkpoint tests only need it to parse).
Json SmallMixtralConfig() {
  return Json::parse(R"({
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_heads": 1, "vocab_size": 16, "intermediate_size": 4,
    "num_local_experts": 2, "num_experts_per_tok": 2
  })");
}

std::string IndexJson(const std::map<std::string, std::string>& weight_map) {
  Json j;
  j["metadata"] = {{"total_size", 0}};
  j["weight_map"] = weight_map;
  return j.dump(1);
}

// The tensors of a fixture safetensors file, raw, in file order.
std::vector<RawTensor> ReadRawTensors(const std::string& path) {
  const std::string bytes = ReadFileOrDie(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const Json header = Json::parse(bytes.substr(8, header_len));
  const std::string data = bytes.substr(8 + header_len);
  std::vector<std::pair<uint64_t, RawTensor>> by_offset;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const uint64_t begin = it.value()["data_offsets"][0].get<uint64_t>();
    const uint64_t end = it.value()["data_offsets"][1].get<uint64_t>();
    by_offset.push_back(
        {begin, RawTensor{it.key(), it.value()["dtype"].get<std::string>(),
                          it.value()["shape"].get<Shape>(),
                          data.substr(begin, end - begin)}});
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<RawTensor> out;
  for (auto& [offset, t] : by_offset) out.push_back(std::move(t));
  return out;
}

// Opening the checkpoint, then (if that succeeds, as with lazily opened
// shards) getting `tensor`, must fail; the error must contain every part.
void ExpectLoadFails(const std::string& dir, const std::string& tensor,
                     const Shape& shape,
                     const std::vector<std::string>& parts) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  absl::Status status = ckpt.status();
  if (ckpt.ok()) status = (*ckpt)->Get(tensor, shape).status();
  ASSERT_FALSE(status.ok()) << "loaded " << tensor << " from a bad checkpoint";
  for (const std::string& p : parts) {
    EXPECT_THAT(status.message(), HasSubstr(p)) << status;
  }
}

class CheckpointTest : public ::testing::Test {
 protected:
  void WriteConfig(const Json& config) {
    WriteFileOrDie(dir_.Join("config.json"), config.dump(2));
  }

  // config.json plus one model.safetensors with three tensors.
  void WriteSingleFile() {
    WriteConfig(SmallMixtralConfig());
    WriteFileOrDie(
        dir_.Join(kSingle),
        BuildSafetensors(
            {MakeTensor("t.f32", DType::kF32, {2, 3}, {1, 2, 3, 4, 5, 6}),
             MakeTensor("t.bf16", DType::kBF16, {4}, {0.5f, -1, 2, 8}),
             MakeTensor("t.f16", DType::kF16, {1, 2}, {0.25f, -3})}));
  }

  // config.json, three shards holding "s1.a", "s1.b" / "s2.a" / "s3.a",
  // and the index.
  void WriteSharded() {
    WriteConfig(SmallMixtralConfig());
    WriteFileOrDie(dir_.Join("s1.safetensors"),
                   BuildSafetensors({MakeTensor("s1.a", DType::kF32, {2}, {1, 2}),
                                     MakeTensor("s1.b", DType::kF32, {1}, {3})}));
    WriteFileOrDie(dir_.Join("s2.safetensors"),
                   BuildSafetensors({MakeTensor("s2.a", DType::kBF16, {3}, {4, 5, 6})}));
    WriteFileOrDie(dir_.Join("s3.safetensors"),
                   BuildSafetensors({MakeTensor("s3.a", DType::kF16, {2}, {7, 8})}));
    WriteFileOrDie(dir_.Join(kIndex), IndexJson({{"s1.a", "s1.safetensors"},
                                                 {"s1.b", "s1.safetensors"},
                                                 {"s2.a", "s2.safetensors"},
                                                 {"s3.a", "s3.safetensors"}}));
  }

  std::unique_ptr<Checkpoint> OpenOk() {
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_.path());
    EXPECT_TRUE(ckpt.ok()) << ckpt.status();
    return ckpt.ok() ? std::move(*ckpt) : nullptr;
  }

  TempDir dir_;
};

TEST_F(CheckpointTest, SingleFile) {
  WriteSingleFile();
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_EQ(ckpt->dir(), dir_.path());
  EXPECT_EQ(ckpt->config().family, ModelFamily::kMixtral);
  EXPECT_EQ(ckpt->config().hidden_size, 8);
  EXPECT_TRUE(ckpt->Has("t.f32"));
  EXPECT_TRUE(ckpt->Has("t.f16"));
  EXPECT_FALSE(ckpt->Has("t.f64"));

  absl::StatusOr<TensorView> f32 = ckpt->Get("t.f32", {2, 3});
  ASSERT_TRUE(f32.ok()) << f32.status();
  EXPECT_EQ(f32->dtype, DType::kF32);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f32->At(i), i + 1.0f);
  absl::StatusOr<TensorView> bf16 = ckpt->Get("t.bf16", {4});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->dtype, DType::kBF16);
  EXPECT_EQ(bf16->At(0), 0.5f);
  EXPECT_EQ(bf16->At(3), 8.0f);
  absl::StatusOr<TensorView> f16 = ckpt->Get("t.f16", {1, 2});
  ASSERT_TRUE(f16.ok()) << f16.status();
  EXPECT_EQ(f16->dtype, DType::kF16);
  EXPECT_EQ(f16->At(0), 0.25f);
  EXPECT_EQ(f16->At(1), -3.0f);
  EXPECT_THAT(ckpt->OpenedShards(), ElementsAre(kSingle));
}

TEST_F(CheckpointTest, WrongShapeNamesTensorAndBothShapes) {
  WriteSingleFile();
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  for (const Shape& wrong : {Shape{3, 2}, Shape{6}, Shape{2, 3, 1}, Shape{}}) {
    absl::StatusOr<TensorView> v = ckpt->Get("t.f32", wrong);
    ASSERT_FALSE(v.ok()) << ShapeString(wrong);
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(v.status().message(),
                AllOf(HasSubstr("t.f32"), HasSubstr(ShapeString({2, 3})),
                      HasSubstr(ShapeString(wrong))));
  }
}

TEST_F(CheckpointTest, MissingTensorIsNamed) {
  WriteSingleFile();
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  absl::StatusOr<TensorView> v = ckpt->Get("model.norm.weight", {8});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(v.status().message(), HasSubstr("model.norm.weight"));
}

TEST_F(CheckpointTest, ShardsOpenLazily) {
  WriteSharded();
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_THAT(ckpt->OpenedShards(), IsEmpty());
  EXPECT_TRUE(ckpt->Has("s3.a"));  // from the index, without opening
  EXPECT_THAT(ckpt->OpenedShards(), IsEmpty());

  absl::StatusOr<TensorView> s2 = ckpt->Get("s2.a", {3});
  ASSERT_TRUE(s2.ok()) << s2.status();
  EXPECT_EQ(s2->At(2), 6.0f);
  EXPECT_THAT(ckpt->OpenedShards(), ElementsAre("s2.safetensors"));
  ASSERT_TRUE(ckpt->Get("s2.a", {3}).ok());
  EXPECT_THAT(ckpt->OpenedShards(), ElementsAre("s2.safetensors"));

  absl::StatusOr<TensorView> s1 = ckpt->Get("s1.b", {1});
  ASSERT_TRUE(s1.ok()) << s1.status();
  EXPECT_EQ(s1->At(0), 3.0f);
  EXPECT_THAT(ckpt->OpenedShards(),
              UnorderedElementsAre("s1.safetensors", "s2.safetensors"));
  // Views from an earlier shard stay valid after more shards open.
  EXPECT_EQ(s2->At(0), 4.0f);

  absl::StatusOr<TensorView> s3 = ckpt->Get("s3.a", {2});
  ASSERT_TRUE(s3.ok()) << s3.status();
  EXPECT_EQ(s3->At(1), 8.0f);
  EXPECT_THAT(ckpt->OpenedShards(),
              UnorderedElementsAre("s1.safetensors", "s2.safetensors",
                                   "s3.safetensors"));
}

TEST_F(CheckpointTest, ConcurrentGetsOpenEachShardOnce) {
  WriteSharded();
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const bool ok = (t + i) % 2 == 0 ? ckpt->Get("s1.a", {2}).ok()
                                         : ckpt->Get("s2.a", {3}).ok();
        if (!ok) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_THAT(ckpt->OpenedShards(),
              UnorderedElementsAre("s1.safetensors", "s2.safetensors"));
}

TEST_F(CheckpointTest, IndexNamesMissingShard) {
  WriteSharded();
  std::filesystem::remove(dir_.Join("s2.safetensors"));
  ExpectLoadFails(dir_.path(), "s2.a", {3}, {"s2.safetensors"});
  // With lazy opening the other shards stay usable.
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_.path());
  if (ckpt.ok()) {
    EXPECT_TRUE((*ckpt)->Get("s1.a", {2}).ok());
  }
}

TEST_F(CheckpointTest, IndexListsTensorTheShardLacks) {
  WriteSharded();
  WriteFileOrDie(dir_.Join(kIndex), IndexJson({{"s1.a", "s1.safetensors"},
                                               {"s2.a", "s1.safetensors"}}));
  ExpectLoadFails(dir_.path(), "s2.a", {3}, {"s2.a"});
}

TEST_F(CheckpointTest, MalformedIndex) {
  WriteSharded();
  for (const std::string& text :
       {std::string("{"), std::string("[]"), std::string("not json"),
        std::string("")}) {
    SCOPED_TRACE(text);
    WriteFileOrDie(dir_.Join(kIndex), text);
    ExpectLoadFails(dir_.path(), "s1.a", {2}, {kIndex});
  }
  WriteFileOrDie(dir_.Join(kIndex), R"({"metadata": {}})");
  ExpectLoadFails(dir_.path(), "s1.a", {2}, {"weight_map"});
  WriteFileOrDie(dir_.Join(kIndex), R"({"weight_map": ["s1.safetensors"]})");
  ExpectLoadFails(dir_.path(), "s1.a", {2}, {"weight_map"});
  WriteFileOrDie(dir_.Join(kIndex), R"({"weight_map": {"s1.a": 1}})");
  ExpectLoadFails(dir_.path(), "s1.a", {2}, {"s1.a"});
}

TEST_F(CheckpointTest, ShardNamesOutsideTheDirectoryAreRejected) {
  // Real files exist at each escaping path, so only the name check can stop
  // the load.
  const std::string ckpt_dir = dir_.Join("ckpt");
  std::filesystem::create_directories(ckpt_dir + "/sub");
  const std::string shard =
      BuildSafetensors({MakeTensor("w", DType::kF32, {2}, {1, 2})});
  WriteFileOrDie(dir_.Join("outside.safetensors"), shard);
  WriteFileOrDie(ckpt_dir + "/sub/inside.safetensors", shard);
  WriteFileOrDie(ckpt_dir + "/config.json", SmallMixtralConfig().dump());
  const std::string abs = dir_.Join("outside.safetensors");
  for (const std::string& name :
       {std::string("../outside.safetensors"), std::string("sub/inside.safetensors"),
        abs, std::string(".."), std::string("sub/../sub/inside.safetensors")}) {
    SCOPED_TRACE(name);
    WriteFileOrDie(ckpt_dir + "/" + kIndex, IndexJson({{"w", name}}));
    ExpectLoadFails(ckpt_dir, "w", {2}, {name});
  }
}

TEST_F(CheckpointTest, MissingConfig) {
  WriteSingleFile();
  std::filesystem::remove(dir_.Join("config.json"));
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("config.json"));
}

TEST_F(CheckpointTest, ConfigErrorsNameTheField) {
  WriteSingleFile();
  Json config = SmallMixtralConfig();
  config.erase("hidden_size");
  WriteConfig(config);
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(), HasSubstr("hidden_size"));

  config = SmallMixtralConfig();
  config["architectures"] = {"DeepseekV3ForCausalLM"};
  WriteConfig(config);
  ckpt = Checkpoint::Open(dir_.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("DeepseekV3ForCausalLM"));
}

TEST_F(CheckpointTest, MissingDirectoryOrWeights) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
      Checkpoint::Open(dir_.Join("absent"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr(dir_.Join("absent")));

  WriteConfig(SmallMixtralConfig());  // no weights at all
  ckpt = Checkpoint::Open(dir_.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr(kSingle));
}

TEST_F(CheckpointTest, TruncatedSingleFileNamesTheTensor) {
  WriteConfig(SmallMixtralConfig());
  const std::string good = BuildSafetensors(
      {MakeTensor("first.weight", DType::kF32, {4}, {1, 2, 3, 4}),
       MakeTensor("last.weight", DType::kF32, {4}, {5, 6, 7, 8})});
  WriteFileOrDie(dir_.Join(kSingle), good.substr(0, good.size() - 4));
  ExpectLoadFails(dir_.path(), "first.weight", {4}, {"last.weight"});
}

TEST_F(CheckpointTest, TruncatedShardNamesTheTensor) {
  WriteSharded();
  const std::string good =
      BuildSafetensors({MakeTensor("s2.a", DType::kBF16, {3}, {4, 5, 6})});
  WriteFileOrDie(dir_.Join("s2.safetensors"), good.substr(0, good.size() - 1));
  ExpectLoadFails(dir_.path(), "s2.a", {3}, {"s2.a"});
}

TEST_F(CheckpointTest, ShardTooShortForHeader) {
  WriteSharded();
  WriteFileOrDie(dir_.Join("s3.safetensors"), "abc");
  ExpectLoadFails(dir_.path(), "s3.a", {2}, {"s3.safetensors"});
  WriteFileOrDie(dir_.Join("s3.safetensors"), "");
  ExpectLoadFails(dir_.path(), "s3.a", {2}, {"s3.safetensors"});
}

TEST_F(CheckpointTest, UnknownDTypeNamesTheTensor) {
  WriteConfig(SmallMixtralConfig());
  std::string data;
  Json header = LayOut({MakeTensor("ok.weight", DType::kF32, {2}, {1, 2}),
                        MakeTensor("odd.weight", DType::kF16, {2}, {1, 2})},
                       &data);
  header["odd.weight"]["dtype"] = "Q4_X";
  WriteFileOrDie(dir_.Join(kSingle), SafetensorsBytes(header.dump(), data));
  ExpectLoadFails(dir_.path(), "odd.weight", {2}, {"odd.weight", "Q4_X"});
}

TEST_F(CheckpointTest, UnsupportedDTypeNamesTheTensorWhenRequested) {
  WriteConfig(SmallMixtralConfig());
  WriteFileOrDie(dir_.Join(kSingle),
                 BuildSafetensors({MakeTensor("w", DType::kF32, {2}, {1, 2}),
                                   RawTensor{"counts", "I64", {2}, std::string(16, '\0')}}));
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_TRUE(ckpt->Get("w", {2}).ok());
  absl::StatusOr<TensorView> v = ckpt->Get("counts", {2});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(v.status().message(), AllOf(HasSubstr("counts"), HasSubstr("I64")));
}

// ---------------------------------------------------------------------------
// LoadModelWeights on the fixture checkpoints.

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
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(file);
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
  absl::StatusOr<ModelWeights> w = LoadFixture("tiny-mixtral", WeightSelection::Full());
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
  ExpectSameValues(e5.gate, file, "model.layers.1.block_sparse_moe.experts.5.w1.weight");
  ExpectSameValues(e5.up, file, "model.layers.1.block_sparse_moe.experts.5.w3.weight");
  ExpectSameValues(e5.down, file, "model.layers.1.block_sparse_moe.experts.5.w2.weight");
  ExpectSameValues(w->layers[0].router_gate, file,
                   "model.layers.0.block_sparse_moe.gate.weight");
  ExpectSameValues(w->layers[1].attention.k, file, "model.layers.1.self_attn.k_proj.weight");
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
  absl::StatusOr<ModelWeights> w = LoadFixture("tiny-mixtral", WeightSelection::GatesOnly());
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
    std::string named;
  };
  for (const Case& c : {Case{{0, 8}, "8"}, Case{{1, 100}, "100"},
                        Case{{0, -1}, "-1"}, Case{{2, 0}, "layer 2"},
                        Case{{-1, 0}, "-1"}}) {
    SCOPED_TRACE(c.named);
    absl::StatusOr<ModelWeights> w =
        LoadFixture("tiny-mixtral", WeightSelection::Experts({{0, 1}, c.expert}));
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(w.status().message(), HasSubstr(c.named));
  }
}

TEST(ModelWeightsTest, Qwen2MoeFull) {
  absl::StatusOr<ModelWeights> w = LoadFixture("tiny-qwen2-moe", WeightSelection::Full());
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
  EXPECT_THAT(w.status().message(), HasSubstr("1"));
}

// ActiveWeightBytesPerToken, from the config by hand: per layer the norms,
// attention, router gate and top-k experts; the final norm, lm_head and one
// embedding row.
TEST(ModelWeightsTest, ActiveBytesMixtral) {
  absl::StatusOr<ModelWeights> w = LoadFixture("tiny-mixtral", WeightSelection::Full());
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = w->config;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t per_layer = 2 * h + qd * h + 2 * kvd * h + h * qd +
                            int64_t{c.num_experts} * h +
                            c.num_experts_per_tok * 3 * c.expert_intermediate_size * h;
  const int64_t elements = c.num_layers * per_layer + h +
                           int64_t{c.vocab_size} * h + h;
  EXPECT_EQ(ActiveWeightBytesPerToken(*w), 2 * elements);  // BF16
  EXPECT_EQ(ActiveWeightBytesPerToken(*w), 264960);
}

TEST(ModelWeightsTest, ActiveBytesQwen2Moe) {
  absl::StatusOr<ModelWeights> w = LoadFixture("tiny-qwen2-moe", WeightSelection::Full());
  ASSERT_TRUE(w.ok()) << w.status();
  const ModelConfig& c = w->config;
  const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t attention = qd * h + qd + 2 * (kvd * h + kvd) + h * qd;
  const int64_t moe_layer =
      2 * h + attention + int64_t{c.num_experts} * h +
      3 * int64_t{c.shared_expert_intermediate_size} * h + h +
      c.num_experts_per_tok * 3 * c.expert_intermediate_size * h;
  const int64_t dense_layer = 2 * h + attention + 3 * c.dense_intermediate_size * h;
  const int64_t elements = 2 * moe_layer + dense_layer + h +
                           int64_t{c.vocab_size} * h + h;
  EXPECT_EQ(ActiveWeightBytesPerToken(*w), 2 * elements);
}

// A copy of the tiny-mixtral fixture to break on purpose.
class BrokenMixtralTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tensors_ = ReadRawTensors(FixtureDir("tiny-mixtral") + "/model.safetensors");
    config_ = Json::parse(ReadFileOrDie(FixtureDir("tiny-mixtral") + "/config.json"));
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
    tensors_.erase(std::remove_if(tensors_.begin(), tensors_.end(),
                                  [&](const RawTensor& t) { return t.name == name; }),
                   tensors_.end());
    ASSERT_EQ(tensors_.size() + 1, before) << name;
  }

  absl::StatusOr<ModelWeights> Load(const WeightSelection& selection) {
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir_.path());
    if (!ckpt.ok()) return ckpt.status();
    return LoadModelWeights(std::shared_ptr<Checkpoint>(std::move(*ckpt)), selection);
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
  const std::string name = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
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
  const std::string name = "model.layers.0.block_sparse_moe.experts.6.w1.weight";
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
