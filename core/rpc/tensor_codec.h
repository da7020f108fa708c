// Conversion between moe.v1.Tensor messages and float32 buffers, with the
// checks every receiver needs: dtype, shape and byte size must agree.
#ifndef MOE_CORE_RPC_TENSOR_CODEC_H_
#define MOE_CORE_RPC_TENSOR_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "moe/v1/tensor.pb.h"

namespace moe {

// Fills `tensor` with an F32 [rows, cols] tensor copied from `data`.
void EncodeF32(const float* data, int64_t rows, int64_t cols,
               v1::Tensor* tensor);

// The float32 rows of a received tensor: a view of the message's bytes
// (which must outlive it), or a copy in `owned` when those bytes are not
// float-aligned.
struct F32Rows {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> owned;
};

// Checks that `tensor` is F32, two-dimensional with `expected_cols` columns,
// and that its byte size is rows * cols * 4. INVALID_ARGUMENT naming `what`
// (e.g. "groups[3].hidden") otherwise.
absl::StatusOr<F32Rows> DecodeF32Rows(const v1::Tensor& tensor,
                                      int64_t expected_cols,
                                      absl::string_view what);

}  // namespace moe

#endif  // MOE_CORE_RPC_TENSOR_CODEC_H_
