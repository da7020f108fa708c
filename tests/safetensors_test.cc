// Tests of core/safetensors.h on hand-built files: values read back exactly,
// and every malformed file rejected at Open with an error naming the file
// and, for per-tensor problems, the tensor.
#include "core/safetensors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
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
using ::testing::UnorderedElementsAre;
using Json = nlohmann::json;

constexpr char kA[] = "alpha.weight";
constexpr char kB[] = "beta.bias";

class SafetensorsTest : public ::testing::Test {
 protected:
  // Writes `bytes` to a file in the temp dir and opens it.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenBytes(
      const std::string& bytes, const std::string& name = "t.safetensors") {
    path_ = dir_.Join(name);
    WriteFileOrDie(path_, bytes);
    return SafetensorsFile::Open(path_);
  }

  // Expects Open of `bytes` to fail with INVALID_ARGUMENT naming the file
  // and each of `parts`.
  void ExpectOpenError(const std::string& bytes,
                       const std::vector<std::string>& parts) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = OpenBytes(bytes);
    ASSERT_FALSE(f.ok()) << "opened a bad file";
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument)
        << f.status();
    EXPECT_THAT(f.status().message(), HasSubstr(path_));
    for (const std::string& p : parts) {
      EXPECT_THAT(f.status().message(), HasSubstr(p));
    }
  }

  // A valid two-tensor layout (kA: F32 [2, 3], kB: BF16 [4]) whose header
  // the caller edits.
  Json GoodHeader(std::string* data) {
    return LayOut({MakeTensor(kA, DType::kF32, {2, 3}, {1, 2, 3, 4, 5, 6}),
                   MakeTensor(kB, DType::kBF16, {4}, {1, -1, 2, -2})},
                  data);
  }

  TempDir dir_;
  std::string path_;
};

// PopulateRange maps in exactly the pages of its range (checked with
// mincore on a fresh anonymous mapping, whose pages are absent until
// touched), slice by slice.
TEST(PopulateRangeTest, FaultsInTheRangesPagesOnly) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t pages = 64;
  void* map = ::mmap(nullptr, pages * page, PROT_READ,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  // Keep the kernel from backing the region with one huge page.
  ::madvise(map, pages * page, MADV_NOHUGEPAGE);
  auto resident = [&] {
    std::vector<unsigned char> in(pages);
    EXPECT_EQ(::mincore(map, pages * page, in.data()), 0);
    std::vector<int> out;
    for (size_t i = 0; i < pages; ++i) out.push_back(in[i] & 1);
    return out;
  };
  ASSERT_EQ(resident(), std::vector<int>(pages, 0));
  // Pages 10 to 29: starts mid-page 10, ends mid-page 29, slices of 3.
  PopulateRange(static_cast<char*>(map) + 10 * page + 100, 19 * page,
                3 * page);
  std::vector<int> want(pages, 0);
  for (size_t i = 10; i <= 29; ++i) want[i] = 1;
  EXPECT_EQ(resident(), want);
  ::munmap(map, pages * page);
}

TEST_F(SafetensorsTest, ReadsValuesOfEachDTypeExactly) {
  const std::vector<float> f32 = {1.5f, -2.25f, 3e-8f, 1e30f, -0.0f, 7.0f};
  const std::vector<float> f16 = {0.5f, -65504.0f, 6e-8f, 0.333251953125f};
  const std::vector<float> bf16 = {1.0f, -3.0e38f, 0.015625f,
                                   7.0f, -0.5f,    2.0f};
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      OpenBytes(BuildSafetensors(
          {MakeTensor("layer.f32", DType::kF32, {2, 3}, f32),
           MakeTensor("layer.f16", DType::kF16, {4}, f16),
           MakeTensor("layer.bf16", DType::kBF16, {3, 1, 2}, bf16)}));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->path(), path_);
  EXPECT_TRUE((*f)->Has("layer.f32"));
  EXPECT_FALSE((*f)->Has("__metadata__"));
  EXPECT_FALSE((*f)->Has("layer.f64"));

  absl::StatusOr<TensorView> a = (*f)->Get("layer.f32");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_THAT(a->shape, ElementsAre(2, 3));
  EXPECT_EQ(a->NumBytes(), 24u);
  for (size_t i = 0; i < f32.size(); ++i) EXPECT_EQ(a->At(i), f32[i]) << i;
  EXPECT_TRUE(std::signbit(a->At(4)));
  // Row views step by whole rows.
  EXPECT_EQ(static_cast<const float*>(a->Row(1))[0], f32[3]);

  absl::StatusOr<TensorView> b = (*f)->Get("layer.f16");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->dtype, DType::kF16);
  EXPECT_THAT(b->shape, ElementsAre(4));
  for (size_t i = 0; i < f16.size(); ++i) {
    EXPECT_EQ(b->At(i), F16ToFloat(FloatToF16(f16[i]))) << i;
  }
  EXPECT_EQ(b->At(0), 0.5f);
  EXPECT_EQ(b->At(1), -65504.0f);

  absl::StatusOr<TensorView> c = (*f)->Get("layer.bf16");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_THAT(c->shape, ElementsAre(3, 1, 2));
  EXPECT_EQ(c->rows(), 3);
  EXPECT_EQ(c->cols(), 2);
  for (size_t i = 0; i < bf16.size(); ++i) {
    EXPECT_EQ(c->At(i), BF16ToFloat(FloatToBF16(bf16[i]))) << i;
  }
  EXPECT_EQ(c->At(0), 1.0f);
  EXPECT_EQ(c->At(2), 0.015625f);
}

TEST_F(SafetensorsTest, EntriesDescribeTheHeader) {
  std::string data;
  const Json header = GoodHeader(&data);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      OpenBytes(SafetensorsBytes(header.dump(), data));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->entries().size(), 2u);
  const SafetensorsEntry& a = (*f)->entries().at(kA);
  EXPECT_EQ(a.dtype, "F32");
  EXPECT_THAT(a.shape, ElementsAre(2, 3));
  EXPECT_EQ(a.begin, 0u);
  EXPECT_EQ(a.end, 24u);
  const SafetensorsEntry& b = (*f)->entries().at(kB);
  EXPECT_EQ(b.dtype, "BF16");
  EXPECT_EQ(b.begin, 24u);
  EXPECT_EQ(b.end, 32u);
}

TEST_F(SafetensorsTest, TensorsMayBeStoredOutOfOrderAndHeaderPadded) {
  // Data of kB first, then kA; header padded with trailing spaces as the
  // reference writer does for alignment.
  const std::string a = testing::EncodeValues({1, 2, 3, 4}, DType::kF32);
  const std::string b = testing::EncodeValues({5, 6}, DType::kF16);
  Json header;
  header[kA] = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {4, 20}}};
  header[kB] = {{"dtype", "F16"}, {"shape", {2}}, {"data_offsets", {0, 4}}};
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      OpenBytes(SafetensorsBytes(header.dump() + "      ", b + a));
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<TensorView> va = (*f)->Get(kA);
  absl::StatusOr<TensorView> vb = (*f)->Get(kB);
  ASSERT_TRUE(va.ok()) << va.status();
  ASSERT_TRUE(vb.ok()) << vb.status();
  EXPECT_EQ(va->At(0), 1.0f);
  EXPECT_EQ(va->At(3), 4.0f);
  EXPECT_EQ(vb->At(0), 5.0f);
  EXPECT_EQ(vb->At(1), 6.0f);
}

TEST_F(SafetensorsTest, PopulateOpensTheSameData) {
  WriteFileOrDie(
      dir_.Join("p.safetensors"),
      BuildSafetensors({MakeTensor("w", DType::kBF16, {2}, {3, 4})}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      SafetensorsFile::Open(dir_.Join("p.safetensors"), /*populate=*/true);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<TensorView> w = (*f)->Get("w");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->At(1), 4.0f);
}

TEST_F(SafetensorsTest, MissingTensorIsNotFoundAndNamed) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = OpenBytes(
      BuildSafetensors({MakeTensor("present", DType::kF32, {1}, {1})}));
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<TensorView> v = (*f)->Get("model.layers.0.absent.weight");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(v.status().message(), HasSubstr("model.layers.0.absent.weight"));
}

TEST_F(SafetensorsTest, UnsupportedButValidDTypeReportedWhenRequested) {
  RawTensor ids{"position_ids", "I64", {3}, std::string(24, '\1')};
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = OpenBytes(
      BuildSafetensors({ids, MakeTensor("w", DType::kF32, {2}, {1, 2})}));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->Has("position_ids"));
  EXPECT_EQ((*f)->entries().at("position_ids").dtype, "I64");
  absl::StatusOr<TensorView> v = (*f)->Get("position_ids");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(v.status().message(),
              AllOf(HasSubstr("position_ids"), HasSubstr("I64")));
  // The other tensors of the file stay usable.
  absl::StatusOr<TensorView> w = (*f)->Get("w");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->At(1), 2.0f);
}

TEST_F(SafetensorsTest, MissingFile) {
  const std::string path = dir_.Join("absent.safetensors");
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  EXPECT_THAT(f.status().message(), HasSubstr(path));
}

TEST_F(SafetensorsTest, EmptyFile) { ExpectOpenError("", {}); }

TEST_F(SafetensorsTest, FileShorterThanLengthPrefix) {
  ExpectOpenError(std::string("\x02\x00\x00\x00\x00", 5), {});
  ExpectOpenError(std::string(7, '\0'), {});
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanFile) {
  const std::string good =
      BuildSafetensors({MakeTensor("w", DType::kF32, {2}, {1, 2})});
  std::string bad = good;
  const uint64_t huge = good.size();  // header cannot be the whole file
  std::memcpy(bad.data(), &huge, 8);
  ExpectOpenError(bad, {});
  const uint64_t enormous = uint64_t{1} << 62;
  std::memcpy(bad.data(), &enormous, 8);
  ExpectOpenError(bad, {});
  const uint64_t all_ones = ~uint64_t{0};
  std::memcpy(bad.data(), &all_ones, 8);
  ExpectOpenError(bad, {});
}

TEST_F(SafetensorsTest, HeaderOnlyWithNoTensors) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      OpenBytes(SafetensorsBytes("{}", ""));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->entries().empty());
}

TEST_F(SafetensorsTest, BadHeaderJson) {
  ExpectOpenError(SafetensorsBytes("{\"a\": {\"dtype\": \"F32\"", ""), {});
  ExpectOpenError(SafetensorsBytes("not json at all", ""), {});
  ExpectOpenError(SafetensorsBytes("[1, 2, 3]", ""), {});
  ExpectOpenError(SafetensorsBytes(std::string("{\0}", 3), ""), {});
}

TEST_F(SafetensorsTest, TruncatedData) {
  const std::string good =
      BuildSafetensors({MakeTensor("first", DType::kF32, {4}, {1, 2, 3, 4}),
                        MakeTensor("second", DType::kF32, {4}, {5, 6, 7, 8})});
  // Cut into the second tensor: the error names it.
  ExpectOpenError(good.substr(0, good.size() - 3), {"second"});
  // Cut into the first: both run past the end; either may be named.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      OpenBytes(good.substr(0, good.size() - 20));
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(),
              ::testing::AnyOf(HasSubstr("first"), HasSubstr("second")));
}

TEST_F(SafetensorsTest, OffsetsOutOfRange) {
  std::string data;
  Json header = GoodHeader(&data);
  header[kB]["data_offsets"] = {24, 40};  // data is 32 bytes
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB});
}

TEST_F(SafetensorsTest, OffsetsBeginAfterEnd) {
  std::string data;
  Json header = GoodHeader(&data);
  header[kB]["data_offsets"] = {32, 24};
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB});
}

TEST_F(SafetensorsTest, MalformedOffsets) {
  for (const Json& offsets :
       {Json::array({-8, 0}), Json::array({0}), Json::array({0, 8, 16}),
        Json("0-8"), Json::array({"0", "8"}), Json::array({0.0, 8.5})}) {
    SCOPED_TRACE(offsets.dump());
    std::string data;
    Json header = GoodHeader(&data);
    header[kB]["data_offsets"] = offsets;
    ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB});
  }
  std::string data;
  Json header = GoodHeader(&data);
  header[kA].erase("data_offsets");
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kA});
}

TEST_F(SafetensorsTest, SizeDisagreesWithDTypeAndShape) {
  std::string data;
  Json header = GoodHeader(&data);
  header[kA]["shape"] = {2, 2};  // 16 bytes of F32, but 24 are stored
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kA});

  header = GoodHeader(&data);
  header[kA]["dtype"] = "F16";  // 12 bytes of F16, but 24 are stored
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kA});

  header = GoodHeader(&data);
  header[kB]["shape"] = {8};  // 16 bytes of BF16, but 8 are stored
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB});
}

TEST_F(SafetensorsTest, UnknownDTypeNamesTensorAndDType) {
  std::string data;
  Json header = GoodHeader(&data);
  header[kB]["dtype"] = "Q4_X";
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB, "Q4_X"});
  header[kB]["dtype"] = 16;
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB});
  header[kB].erase("dtype");
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB});
}

TEST_F(SafetensorsTest, BadShapes) {
  for (const Json& shape : {Json::array({-1, 4}), Json::array({2.5}),
                            Json("[4]"), Json::array({"4"})}) {
    SCOPED_TRACE(shape.dump());
    std::string data;
    Json header = GoodHeader(&data);
    header[kB]["shape"] = shape;
    ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB});
  }
  // A shape whose element count overflows 64 bits must not wrap around to
  // the stored size: (2^62 + 1) * 4 = 2^64 + 4 = 4 elements modulo 2^64,
  // exactly the 8 bytes of kB.
  std::string data;
  Json header = GoodHeader(&data);
  header[kB]["shape"] = {(uint64_t{1} << 62) + 1, 4};
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB});
}

TEST_F(SafetensorsTest, ByteSizeOfHugeShapesMustNotWrap) {
  // 2^62 F32 elements are 2^64 bytes: modulo 2^64 that is 0, which must not
  // pass for an empty byte range (the view would claim 2^62 elements).
  for (const Json& shape :
       {Json::array({uint64_t{1} << 62}),
        Json::array({uint64_t{1} << 31, uint64_t{1} << 31})}) {
    SCOPED_TRACE(shape.dump());
    std::string data;
    Json header = GoodHeader(&data);
    header["empty.weight"] = {
        {"dtype", "F32"}, {"shape", shape}, {"data_offsets", {0, 0}}};
    ExpectOpenError(SafetensorsBytes(header.dump(), data), {"empty.weight"});
  }
}

TEST_F(SafetensorsTest, HugeDimAfterAZeroDimIsRejected) {
  // A 0 dim makes the element count 0 whatever follows, so the dims after it
  // must be bounded on their own: 2^63 + 5 would become a negative int64 dim
  // of an "empty" tensor (tests/fuzz/safetensors_fuzzer checks this too).
  for (const Json& shape :
       {Json::array({0, (uint64_t{1} << 63) + 5}),
        Json::array({0, (uint64_t{1} << 62) + 1, 2})}) {
    SCOPED_TRACE(shape.dump());
    std::string data;
    Json header = GoodHeader(&data);
    header["empty.weight"] = {
        {"dtype", "F32"}, {"shape", shape}, {"data_offsets", {0, 0}}};
    ExpectOpenError(SafetensorsBytes(header.dump(), data),
                    {"empty.weight", "shape is too large"});
  }
  // A zero-sized tensor with ordinary dims still opens.
  std::string data;
  Json header = GoodHeader(&data);
  header["empty.weight"] = {
      {"dtype", "F32"}, {"shape", {0, 1 << 20}}, {"data_offsets", {0, 0}}};
  EXPECT_TRUE(OpenBytes(SafetensorsBytes(header.dump(), data)).ok());
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
  std::string data;
  Json header = GoodHeader(&data);
  header[kB] = "BF16";
  ExpectOpenError(SafetensorsBytes(header.dump(), data), {kB});
}

TEST(SafetensorsDTypeSizeTest, KnownAndUnknown) {
  EXPECT_EQ(SafetensorsDTypeSize("F32"), 4u);
  EXPECT_EQ(SafetensorsDTypeSize("F16"), 2u);
  EXPECT_EQ(SafetensorsDTypeSize("BF16"), 2u);
  EXPECT_EQ(SafetensorsDTypeSize("I64"), 8u);
  EXPECT_EQ(SafetensorsDTypeSize("F64"), 8u);
  EXPECT_EQ(SafetensorsDTypeSize("I32"), 4u);
  EXPECT_EQ(SafetensorsDTypeSize("U8"), 1u);
  EXPECT_EQ(SafetensorsDTypeSize("BOOL"), 1u);
  EXPECT_EQ(SafetensorsDTypeSize("Q4_X"), 0u);
  EXPECT_EQ(SafetensorsDTypeSize(""), 0u);
}

TEST(ShapeStringTest, Format) {
  EXPECT_EQ(ShapeString({2, 3}), "[2, 3]");
  EXPECT_EQ(ShapeString({7}), "[7]");
  EXPECT_EQ(ShapeString({}), "[]");
}

}  // namespace
}  // namespace moe
