// DecodeF32Rows, the check every receiver of a moe.v1.Tensor applies (expert
// groups, router input and output, expert answers), on arbitrary Tensor
// messages: an accepted tensor's rows are read in full, and an EncodeF32 of
// them decodes to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/rpc/tensor_codec.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tensor = moe::fuzz::ParseProto<moe::v1::Tensor>(data, size);
  if (!tensor) return 0;
  // Receivers pass their hidden size; take the message's own column count
  // when it is plausible so that the size checks are reached, else 64.
  int64_t cols = 64;
  if (tensor->shape_size() >= 2 && tensor->shape(1) > 0 &&
      tensor->shape(1) <= (int64_t{1} << 16)) {
    cols = tensor->shape(1);
  }
  absl::StatusOr<moe::F32Rows> rows = moe::DecodeF32Rows(*tensor, cols, "x");
  if (!rows.ok()) return 0;
  moe::fuzz::Check(rows->rows >= 0 && rows->cols == cols, "bad decoded shape");
  const size_t bytes = static_cast<size_t>(rows->rows * rows->cols) * 4;
  moe::fuzz::Check(bytes == tensor->data().size(), "decoded size differs");
  moe::v1::Tensor again;
  moe::EncodeF32(rows->data, rows->rows, rows->cols, &again);
  moe::fuzz::Check(again.data().size() == bytes &&
                       std::memcmp(again.data().data(), tensor->data().data(),
                                   bytes) == 0,
                   "EncodeF32(DecodeF32Rows(x)) differs from x");
  return 0;
}
