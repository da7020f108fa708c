// Tests of core/rpc/tensor_codec.h's wire dtypes: F32 bit for bit, BF16
// rounded to nearest even with half the bytes, their spellings, and the
// receivers' checks naming the dtype and byte count.
#include "core/rpc/tensor_codec.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

TEST(TensorCodecTest, F32RowsTravelBitForBit) {
  const std::vector<float> x = {1.0f, -0.1f, 3.14159265f, 1e-30f, -0.0f, 7.5f};
  v1::Tensor t;
  EncodeRows(x.data(), 2, 3, v1::DTYPE_F32, &t);
  EXPECT_EQ(t.dtype(), v1::DTYPE_F32);
  EXPECT_EQ(t.data().size(), 24u);
  absl::StatusOr<F32Rows> rows = DecodeF32Rows(t, 3, "x");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(std::memcmp(rows->data, x.data(), 24), 0);
}

TEST(TensorCodecTest, Bf16RowsAreRoundedToNearestEvenInHalfTheBytes) {
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to even (1).
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6.
  const std::vector<float> x = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -2.5f,
                                0.1f, std::numeric_limits<float>::infinity(),
                                std::nanf("")};
  v1::Tensor t;
  EncodeRows(x.data(), 1, 6, v1::DTYPE_BF16, &t);
  EXPECT_EQ(t.dtype(), v1::DTYPE_BF16);
  EXPECT_EQ(t.data().size(), 12u);
  absl::StatusOr<F32Rows> rows = DecodeF32Rows(t, 6, "x");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->data[0], 1.0f);
  EXPECT_EQ(rows->data[1], 1.0f + 0x1p-6f);
  EXPECT_EQ(rows->data[2], -2.5f);  // exact in BF16
  EXPECT_EQ(rows->data[3], BF16ToFloat(FloatToBF16(0.1f)));
  EXPECT_NEAR(rows->data[3], 0.1f, 0.1f * 0x1p-8f);
  EXPECT_TRUE(std::isinf(rows->data[4]));
  EXPECT_TRUE(std::isnan(rows->data[5]));
}

TEST(TensorCodecTest, NoRowsEncodeToAnEmptyTensorInEitherDtype) {
  // A group with no tokens: its rows pointer is null (an empty vector's).
  for (v1::DType dtype : {v1::DTYPE_F32, v1::DTYPE_BF16}) {
    v1::Tensor t;
    EncodeRows(nullptr, 0, 8, dtype, &t);
    EXPECT_EQ(t.dtype(), dtype);
    ASSERT_EQ(t.shape_size(), 2);
    EXPECT_EQ(t.shape(0), 0);
    EXPECT_EQ(t.shape(1), 8);
    EXPECT_TRUE(t.data().empty());
    absl::StatusOr<F32Rows> rows = DecodeF32Rows(t, 8, "t");
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(rows->rows, 0);
  }
}

TEST(TensorCodecTest, WireDtypeSpellings) {
  EXPECT_EQ(*ParseWireDtype("f32"), v1::DTYPE_F32);
  EXPECT_EQ(*ParseWireDtype("Float32"), v1::DTYPE_F32);
  EXPECT_EQ(*ParseWireDtype("bf16"), v1::DTYPE_BF16);
  EXPECT_EQ(*ParseWireDtype("BFLOAT16"), v1::DTYPE_BF16);
  EXPECT_THAT(ParseWireDtype("fp8").status().message(),
              HasSubstr("\"fp8\" is not one of f32 (float32), bf16 (bfloat16)"));
  EXPECT_STREQ(WireDtypeName(v1::DTYPE_BF16), "bf16");
  EXPECT_EQ(WireBytesPerElement(v1::DTYPE_BF16), 2);
  EXPECT_EQ(WireBytesPerElement(v1::DTYPE_F32), 4);
}

TEST(TensorCodecTest, ReceiversNameTheDtypeAndTheBytes) {
  v1::Tensor t;
  const std::vector<float> x(8, 1.0f);
  EncodeRows(x.data(), 2, 4, v1::DTYPE_BF16, &t);
  t.mutable_data()->pop_back();
  EXPECT_THAT(DecodeF32Rows(t, 4, "groups[0].hidden").status().message(),
              HasSubstr("groups[0].hidden: holds 15 bytes but shape [2, 4] of "
                        "BF16 needs 16"));
  t.set_dtype(v1::DTYPE_F16);
  EXPECT_THAT(DecodeF32Rows(t, 4, "hidden").status().message(),
              HasSubstr("hidden: dtype must be DTYPE_F32 or DTYPE_BF16, got "
                        "DTYPE_F16"));
}

}  // namespace
}  // namespace moe
