// Tests of core/dtype.h: BF16/F16 <-> float32 conversions and dtype names.
//
// The expected values come from an independent definition of each format:
// decoding by ldexp of the sign/exponent/mantissa fields, and rounding to
// nearest-even computed in double precision.
#include "core/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

uint32_t FloatBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Value of an IEEE binary16 bit pattern, from its fields (NaN for NaNs).
double DecodeHalf(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -24);
  } else if (exp == 31) {
    v = mant == 0 ? std::numeric_limits<double>::infinity()
                  : std::numeric_limits<double>::quiet_NaN();
  } else {
    v = std::ldexp(static_cast<double>(1024 + mant), exp - 25);
  }
  return sign ? -v : v;
}

// Round-to-nearest-even of a finite float to binary16, as a double value
// (infinity on overflow). Works on the magnitude; the caller applies the sign.
double RoundToHalfMagnitude(double x) {
  // The largest half is 65504; the midpoint to the next (virtual) value
  // 65536 is 65520, which rounds to even, i.e. up to infinity.
  if (x >= 65520.0) return std::numeric_limits<double>::infinity();
  double quantum;
  if (x < std::ldexp(1.0, -14)) {
    quantum = std::ldexp(1.0, -24);  // subnormal spacing
  } else {
    quantum = std::ldexp(1.0, std::ilogb(x) - 10);
  }
  const double q = x / quantum;  // exact: division by a power of two
  const double fl = std::floor(q);
  const double frac = q - fl;
  double r;
  if (frac > 0.5) {
    r = fl + 1;
  } else if (frac < 0.5) {
    r = fl;
  } else {
    r = std::fmod(fl, 2.0) == 0 ? fl : fl + 1;
  }
  return r * quantum;
}

// Round-to-nearest-even of a float to bfloat16, returned as a bit pattern
// (finite or infinite inputs only).
uint16_t ReferenceFloatToBF16(float f) {
  const uint32_t bits = FloatBits(f);
  const uint16_t lo = static_cast<uint16_t>(bits >> 16);  // truncated
  const uint32_t rest = bits & 0xffffu;
  if (rest < 0x8000u) return lo;
  if (rest > 0x8000u) return static_cast<uint16_t>(lo + 1);
  return (lo & 1u) ? static_cast<uint16_t>(lo + 1) : lo;
}

TEST(BF16Test, DecodesKnownValues) {
  EXPECT_EQ(BF16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BF16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(BF16ToFloat(0x3fc0), 1.5f);
  EXPECT_EQ(BF16ToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(BF16ToFloat(0x8000)));
  EXPECT_EQ(BF16ToFloat(0x7f80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(BF16ToFloat(0xff80), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(BF16ToFloat(0x7fc0)));
  EXPECT_TRUE(std::isnan(BF16ToFloat(0xffc1)));
  // Smallest subnormal: 2^-133.
  EXPECT_EQ(BF16ToFloat(0x0001), std::ldexp(1.0f, -133));
}

TEST(BF16Test, EncodesExactValuesExactly) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBF16(0.0f), 0x0000);
  EXPECT_EQ(FloatToBF16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBF16(-std::numeric_limits<float>::infinity()), 0xff80);
}

TEST(BF16Test, RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between 1 (even mantissa) and 1 + 2^-7: down.
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f808000u)), 0x3f80);
  // 1 + 3 * 2^-8 lies between 0x3f81 (odd) and 0x3f82 (even): up.
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f818000u)), 0x3f82);
  // Just above and below the midpoint.
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f808001u)), 0x3f81);
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f807fffu)), 0x3f80);
  // Negative values round symmetrically.
  EXPECT_EQ(FloatToBF16(BitsToFloat(0xbf808000u)), 0xbf80);
  EXPECT_EQ(FloatToBF16(BitsToFloat(0xbf818000u)), 0xbf82);
  // The largest float rounds up to infinity (above the last midpoint).
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::max()), 0x7f80);
  // Rounding carries into the exponent.
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3fffffffu)), 0x4000);
}

TEST(BF16Test, PreservesNaN) {
  for (uint32_t bits : {0x7fc00000u, 0x7f800001u, 0x7f800100u, 0xff800001u,
                        0x7fffffffu, 0xffc00000u}) {
    const uint16_t b = FloatToBF16(BitsToFloat(bits));
    EXPECT_TRUE(std::isnan(BF16ToFloat(b))) << std::hex << bits;
    EXPECT_EQ(b >> 15, bits >> 31) << "sign of NaN " << std::hex << bits;
  }
}

TEST(BF16Test, EveryBF16RoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = BF16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBF16(f), h) << "bf16 0x" << std::hex << h;
  }
}

TEST(BF16Test, RandomFloatsMatchReferenceRounding) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t bits = rng();
    const float f = BitsToFloat(bits);
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBF16(f), ReferenceFloatToBF16(f))
        << "float bits 0x" << std::hex << bits;
  }
}

TEST(F16Test, DecodesKnownValues) {
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(F16ToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(F16ToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(F16ToFloat(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(F16ToFloat(0x8000)));
  EXPECT_EQ(F16ToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToFloat(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7c01)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0xfe00)));
}

TEST(F16Test, EveryHalfDecodesToItsValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double expected = DecodeHalf(static_cast<uint16_t>(h));
    const float f = F16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(f)) << "half 0x" << std::hex << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), expected) << "half 0x" << std::hex << h;
    ASSERT_EQ(std::signbit(f), (h & 0x8000u) != 0)
        << "half 0x" << std::hex << h;
  }
}

TEST(F16Test, EveryNonNaNHalfRoundTrips) {
  int checked = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      // NaNs stay NaN (the payload need not survive).
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(f))))
          << "half 0x" << std::hex << h;
      continue;
    }
    ASSERT_EQ(FloatToF16(f), h) << "half 0x" << std::hex << h;
    ASSERT_EQ(FloatBits(F16ToFloat(FloatToF16(f))), FloatBits(f))
        << "half 0x" << std::hex << h;
    ++checked;
  }
  // 2 * (31 * 1024 + 1): every finite value and both infinities.
  EXPECT_EQ(checked, 65536 - 2 * 1023);
}

TEST(F16Test, RoundsToNearestEven) {
  // 1 + 2^-11 is the midpoint between 1 (even) and 1 + 2^-10: down.
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3 * 2^-11 is between 0x3c01 (odd) and 0x3c02: up.
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(FloatToF16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)),
            0x3c01);
  EXPECT_EQ(FloatToF16(-(1.0f + 3 * std::ldexp(1.0f, -11))), 0xbc02);
  // Carry into the exponent: just below 2 rounds to 2.
  EXPECT_EQ(FloatToF16(std::nextafter(2.0f, 0.0f)), 0x4000);
}

TEST(F16Test, OverflowAndInfinity) {
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);  // midpoint, rounds to even = inf
  EXPECT_EQ(FloatToF16(1e10f), 0x7c00);
  EXPECT_EQ(FloatToF16(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToF16(-std::numeric_limits<float>::infinity()), 0xfc00);
}

TEST(F16Test, SubnormalsAndUnderflow) {
  const float tiny = std::ldexp(1.0f, -24);  // smallest subnormal half
  EXPECT_EQ(FloatToF16(tiny), 0x0001);
  EXPECT_EQ(FloatToF16(-tiny), 0x8001);
  // Half of it is a midpoint between 0 (even) and 0x0001: down to zero.
  EXPECT_EQ(FloatToF16(tiny / 2), 0x0000);
  EXPECT_EQ(FloatToF16(-tiny / 2), 0x8000);
  // Anything above the midpoint rounds up.
  EXPECT_EQ(FloatToF16(std::nextafter(tiny / 2, 1.0f)), 0x0001);
  // 1.5 * tiny is between 0x0001 (odd) and 0x0002: up.
  EXPECT_EQ(FloatToF16(1.5f * tiny), 0x0002);
  EXPECT_EQ(FloatToF16(2.5f * tiny), 0x0002);
  // Far below: zero with the sign kept.
  EXPECT_EQ(FloatToF16(1e-30f), 0x0000);
  EXPECT_EQ(FloatToF16(-1e-30f), 0x8000);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  // Largest subnormal and rounding up into the smallest normal.
  EXPECT_EQ(FloatToF16(std::ldexp(1023.0f, -24)), 0x03ff);
  EXPECT_EQ(FloatToF16(std::ldexp(1023.5f, -24)), 0x0400);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -14)), 0x0400);
}

TEST(F16Test, NaNStaysNaN) {
  for (uint32_t bits :
       {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f802000u}) {
    const uint16_t h = FloatToF16(BitsToFloat(bits));
    EXPECT_TRUE(std::isnan(F16ToFloat(h))) << std::hex << bits << " -> " << h;
  }
}

// Checks FloatToF16(f) against the reference rounding, by value and sign.
void ExpectHalfRounding(float f) {
  const uint16_t h = FloatToF16(f);
  const double expected =
      RoundToHalfMagnitude(std::fabs(static_cast<double>(f)));
  const double got = DecodeHalf(h);
  ASSERT_EQ(std::fabs(got), expected)
      << "float bits 0x" << std::hex << FloatBits(f) << " -> half 0x" << h;
  ASSERT_EQ((h & 0x8000u) != 0, std::signbit(f))
      << "sign, float bits 0x" << std::hex << FloatBits(f);
}

TEST(F16Test, FloatsAcrossTheHalfRangeMatchReferenceRounding) {
  // Every 7th float bit pattern from 2^-26 to 2^17 (below the subnormals to
  // above the overflow threshold), both signs.
  for (uint32_t bits = 0x32800000u; bits < 0x48000000u; bits += 7) {
    const float f = BitsToFloat(bits);
    ExpectHalfRounding(f);
    ExpectHalfRounding(-f);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(F16Test, RandomFloatsMatchReferenceRounding) {
  std::mt19937 rng(99);
  for (int i = 0; i < 1000000; ++i) {
    const float f = BitsToFloat(rng());
    if (std::isnan(f) || std::isinf(f)) continue;
    ExpectHalfRounding(f);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(DTypeTest, StoreAndLoadEachDType) {
  const float values[] = {1.0f, -0.5f, 3.25f, 0.0f, -1024.0f};
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<char> buf(5 * DTypeSize(d));
    for (int i = 0; i < 5; ++i) StoreFromFloat(buf.data(), d, i, values[i]);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(LoadAsFloat(buf.data(), d, i), values[i]) << DTypeName(d);
    }
  }
  // Inexact values are rounded by the dtype's own conversion.
  uint16_t h;
  StoreFromFloat(&h, DType::kF16, 0, 0.1f);
  EXPECT_EQ(h, FloatToF16(0.1f));
  StoreFromFloat(&h, DType::kBF16, 0, 0.1f);
  EXPECT_EQ(h, FloatToBF16(0.1f));
}

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16}) {
    absl::StatusOr<DType> parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeName(DType::kF16), "F16");
  EXPECT_EQ(DTypeName(DType::kF32), "F32");
}

TEST(DTypeTest, ParseDTypeErrorNamesTheDType) {
  for (const char* name : {"Q4_X", "I64", "F64", "bf16x", ""}) {
    absl::StatusOr<DType> parsed = ParseDType(name);
    ASSERT_FALSE(parsed.ok()) << name;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    if (*name != '\0') {
      EXPECT_THAT(parsed.status().message(), HasSubstr(name));
    }
  }
}

}  // namespace
}  // namespace moe
