// Tests of core/checkpoint.h: single-file and sharded checkpoints, lazy
// shard opening, and bad checkpoints failing with errors that name the
// tensor, shard or field. LoadModelWeights is in model_weights_test.cc.
#include "core/checkpoint.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/safetensors_builder.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::BuildSafetensors;
using ::moe::testing::LayOut;
using ::moe::testing::MakeTensor;
using ::moe::testing::RawTensor;
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
    WriteFileOrDie(
        dir_.Join("s1.safetensors"),
        BuildSafetensors({MakeTensor("s1.a", DType::kF32, {2}, {1, 2}),
                          MakeTensor("s1.b", DType::kF32, {1}, {3})}));
    WriteFileOrDie(
        dir_.Join("s2.safetensors"),
        BuildSafetensors({MakeTensor("s2.a", DType::kBF16, {3}, {4, 5, 6})}));
    WriteFileOrDie(
        dir_.Join("s3.safetensors"),
        BuildSafetensors({MakeTensor("s3.a", DType::kF16, {2}, {7, 8})}));
    WriteFileOrDie(dir_.Join(kIndex), IndexJson({{"s1.a", "s1.safetensors"},
                                                 {"s1.b", "s1.safetensors"},
                                                 {"s2.a", "s2.safetensors"},
                                                 {"s3.a", "s3.safetensors"}}));
  }

  std::unique_ptr<Checkpoint> OpenOk() {
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
        Checkpoint::Open(dir_.path());
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
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
      Checkpoint::Open(dir_.path());
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
  for (const std::string& text : {std::string("{"), std::string("[]"),
                                  std::string("not json"), std::string("")}) {
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
       {std::string("../outside.safetensors"),
        std::string("sub/inside.safetensors"), abs, std::string(".."),
        std::string("sub/../sub/inside.safetensors")}) {
    SCOPED_TRACE(name);
    WriteFileOrDie(ckpt_dir + "/" + kIndex, IndexJson({{"w", name}}));
    ExpectLoadFails(ckpt_dir, "w", {2}, {name});
  }
}

TEST_F(CheckpointTest, MissingConfig) {
  WriteSingleFile();
  std::filesystem::remove(dir_.Join("config.json"));
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
      Checkpoint::Open(dir_.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("config.json"));
}

TEST_F(CheckpointTest, ConfigErrorsNameTheField) {
  WriteSingleFile();
  Json config = SmallMixtralConfig();
  config.erase("hidden_size");
  WriteConfig(config);
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
      Checkpoint::Open(dir_.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(), HasSubstr("hidden_size"));

  config = SmallMixtralConfig();
  config["architectures"] = {"JambaForCausalLM"};
  WriteConfig(config);
  ckpt = Checkpoint::Open(dir_.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("JambaForCausalLM"));
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
                 BuildSafetensors(
                     {MakeTensor("w", DType::kF32, {2}, {1, 2}),
                      RawTensor{"counts", "I64", {2}, std::string(16, '\0')}}));
  std::unique_ptr<Checkpoint> ckpt = OpenOk();
  ASSERT_NE(ckpt, nullptr);
  EXPECT_TRUE(ckpt->Get("w", {2}).ok());
  absl::StatusOr<TensorView> v = ckpt->Get("counts", {2});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(v.status().message(),
              AllOf(HasSubstr("counts"), HasSubstr("I64")));
}

}  // namespace
}  // namespace moe
