// Element types of stored tensors and conversions to float32.
//
// Weights stay in their stored dtype; kernels widen them to float32 on the fly
// and accumulate in float32.
#ifndef MOE_CORE_DTYPE_H_
#define MOE_CORE_DTYPE_H_

#include <cstdint>
#include <cstring>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moe {

enum class DType : uint8_t { kF32, kF16, kBF16 };

// Bytes per element.
inline size_t DTypeSize(DType d) { return d == DType::kF32 ? 4 : 2; }

// Safetensors spelling: "F32", "F16", "BF16".
absl::string_view DTypeName(DType d);

// Parses a safetensors dtype string. Error (INVALID_ARGUMENT) names the dtype
// and the supported set.
absl::StatusOr<DType> ParseDType(absl::string_view name);

inline float BF16ToFloat(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, NaN preserved.
inline uint16_t FloatToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (bits >> 16) | 0x40;  // NaN
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float F16ToFloat(uint16_t v);
uint16_t FloatToF16(float f);

// Reads element `i` of a buffer of dtype `d` as float. Safetensors data need
// not be aligned, hence the memcpy loads (plain moves on x86).
inline float LoadAsFloat(const void* data, DType d, size_t i) {
  const char* base = static_cast<const char*>(data);
  switch (d) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, base + i * 4, 4);
      return f;
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, base + i * 2, 2);
      return BF16ToFloat(h);
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, base + i * 2, 2);
      return F16ToFloat(h);
    }
  }
  return 0.0f;
}

// Writes `v` as element `i` of a buffer of dtype `d`.
void StoreFromFloat(void* data, DType d, size_t i, float v);

}  // namespace moe

#endif  // MOE_CORE_DTYPE_H_
