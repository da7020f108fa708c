// Conversion between moe.v1.Tensor messages and float32 buffers, with the
// checks every receiver needs: dtype, shape and byte size must agree.
//
// Activations travel as F32 (the default: bit-identical to the
// single-process engine) or, when a sender chooses it (attention_server
// --wire_dtype bf16), as BF16: half the bytes, each value rounded to the
// nearest BF16 (8 significant bits) once per hop. Receivers accept either
// and answer in the dtype they were sent.
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

// The activation dtypes a wire may carry: DTYPE_F32 or DTYPE_BF16.
bool IsWireDtype(v1::DType dtype);

// Bytes per element of a wire dtype (4 or 2).
int64_t WireBytesPerElement(v1::DType dtype);

// "f32" / "float32" or "bf16" / "bfloat16" (any case); INVALID_ARGUMENT
// naming the accepted spellings otherwise.
absl::StatusOr<v1::DType> ParseWireDtype(absl::string_view name);

// "f32" or "bf16".
const char* WireDtypeName(v1::DType dtype);

// Writes `count` floats from `src` as `dtype` (F32 copied, BF16 rounded to
// nearest even) at `dst`, which holds count * WireBytesPerElement bytes.
void WriteWire(v1::DType dtype, const float* src, int64_t count, char* dst);

// Fills `tensor` with a [rows, cols] tensor of `dtype` (a wire dtype) from
// `data`.
void EncodeRows(const float* data, int64_t rows, int64_t cols,
                v1::DType dtype, v1::Tensor* tensor);

// The float32 rows of a received tensor: a view of the message's bytes
// (which must outlive it), or a copy in `owned` when those bytes are not
// float-aligned.
struct F32Rows {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> owned;
};

// Checks that `tensor` is F32 or BF16, two-dimensional with
// `expected_cols` columns, and that its byte size is rows * cols * the
// element size. INVALID_ARGUMENT naming `what` (e.g. "groups[3].hidden")
// otherwise. BF16 rows are widened into `owned`.
absl::StatusOr<F32Rows> DecodeF32Rows(const v1::Tensor& tensor,
                                      int64_t expected_cols,
                                      absl::string_view what);

}  // namespace moe

#endif  // MOE_CORE_RPC_TENSOR_CODEC_H_
