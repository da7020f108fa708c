#include "core/rpc/tensor_codec.h"

#include <algorithm>
#include <cstring>

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

absl::StatusOr<F32Rows> DecodeF32Rows(const v1::Tensor& tensor,
                                      int64_t expected_cols,
                                      absl::string_view what) {
  if (tensor.dtype() != v1::DTYPE_F32) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": dtype must be DTYPE_F32, got ",
                     v1::DType_Name(tensor.dtype())));
  }
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
      static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols) * sizeof(float);
  if (rows > (int64_t{1} << 40) / std::max<int64_t>(cols, 1) ||
      tensor.data().size() != expected_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": holds ", tensor.data().size(), " bytes but shape [", rows,
        ", ", cols, "] of F32 needs ", expected_bytes));
  }
  F32Rows out;
  out.rows = rows;
  out.cols = cols;
  const char* bytes = tensor.data().data();
  if (reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
    out.data = reinterpret_cast<const float*>(bytes);
  } else {
    out.owned.resize(rows * cols);
    std::memcpy(out.owned.data(), bytes, expected_bytes);
    out.data = out.owned.data();
  }
  return out;
}

}  // namespace moe
