#include "core/rpc/tensor_codec.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/dtype.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moe {

void EncodeF32(const float* data, int64_t rows, int64_t cols,
               v1::Tensor* tensor) {
  tensor->set_dtype(v1::DTYPE_F32);
  tensor->clear_shape();
  tensor->add_shape(rows);
  tensor->add_shape(cols);
  tensor->mutable_data()->assign(reinterpret_cast<const char*>(data),
                                 static_cast<size_t>(rows * cols) * sizeof(float));
}

bool IsWireDtype(v1::DType dtype) {
  return dtype == v1::DTYPE_F32 || dtype == v1::DTYPE_BF16;
}

int64_t WireBytesPerElement(v1::DType dtype) {
  return dtype == v1::DTYPE_BF16 ? 2 : 4;
}

absl::StatusOr<v1::DType> ParseWireDtype(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "f32" || lower == "float32") return v1::DTYPE_F32;
  if (lower == "bf16" || lower == "bfloat16") return v1::DTYPE_BF16;
  return absl::InvalidArgumentError(absl::StrCat(
      "wire dtype \"", name, "\" is not one of f32 (float32), bf16 (bfloat16)"));
}

const char* WireDtypeName(v1::DType dtype) {
  return dtype == v1::DTYPE_BF16 ? "bf16" : "f32";
}

void WriteWire(v1::DType dtype, const float* src, int64_t count, char* dst) {
  if (count <= 0) return;  // no rows: `src` and `dst` may be null
  if (dtype != v1::DTYPE_BF16) {
    std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t h = FloatToBF16(src[i]);
    std::memcpy(dst + 2 * i, &h, 2);
  }
}

void EncodeRows(const float* data, int64_t rows, int64_t cols,
                v1::DType dtype, v1::Tensor* tensor) {
  tensor->set_dtype(dtype);
  tensor->clear_shape();
  tensor->add_shape(rows);
  tensor->add_shape(cols);
  std::string* bytes = tensor->mutable_data();
  bytes->resize(static_cast<size_t>(rows * cols * WireBytesPerElement(dtype)));
  WriteWire(dtype, data, rows * cols, bytes->data());
}

absl::StatusOr<F32Rows> DecodeF32Rows(const v1::Tensor& tensor,
                                      int64_t expected_cols,
                                      absl::string_view what) {
  if (!IsWireDtype(tensor.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": dtype must be DTYPE_F32 or DTYPE_BF16, got ",
                     v1::DType_Name(tensor.dtype())));
  }
  const bool bf16 = tensor.dtype() == v1::DTYPE_BF16;
  const uint64_t element = bf16 ? 2 : sizeof(float);
  if (tensor.shape_size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": shape must be [tokens, ", expected_cols, "], got [",
                     absl::StrJoin(tensor.shape(), ", "), "]"));
  }
  const int64_t rows = tensor.shape(0), cols = tensor.shape(1);
  if (rows < 0 || cols != expected_cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": shape must be [tokens, ", expected_cols, "], got [",
                     rows, ", ", cols, "]"));
  }
  const uint64_t expected_bytes =
      static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols) * element;
  if (rows > (int64_t{1} << 40) / std::max<int64_t>(cols, 1) ||
      tensor.data().size() != expected_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": holds ", tensor.data().size(), " bytes but shape [", rows,
        ", ", cols, "] of ", bf16 ? "BF16" : "F32", " needs ",
        expected_bytes));
  }
  F32Rows out;
  out.rows = rows;
  out.cols = cols;
  const char* bytes = tensor.data().data();
  if (bf16) {
    out.owned.resize(rows * cols);
    for (int64_t i = 0; i < rows * cols; ++i) {
      uint16_t h;
      std::memcpy(&h, bytes + 2 * i, 2);
      out.owned[i] = BF16ToFloat(h);
    }
    out.data = out.owned.data();
  } else if (reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
    out.data = reinterpret_cast<const float*>(bytes);
  } else {
    out.owned.resize(rows * cols);
    std::memcpy(out.owned.data(), bytes, expected_bytes);
    out.data = out.owned.data();
  }
  return out;
}

}  // namespace moe
