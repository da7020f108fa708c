// DecodeF32Rows, the check every receiver of a moe.v1.Tensor applies (expert
// groups, router input and output, expert answers), on arbitrary Tensor
// messages: an accepted tensor (F32 or BF16) has exactly its rows' bytes,
// and EncodeRows of the decoded rows in the same dtype gives them back.
#include <cmath>
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
  moe::fuzz::Check(moe::IsWireDtype(tensor->dtype()), "accepted a non-wire dtype");
  const int64_t element = moe::WireBytesPerElement(tensor->dtype());
  const size_t bytes = static_cast<size_t>(rows->rows * rows->cols * element);
  moe::fuzz::Check(bytes == tensor->data().size(), "decoded size differs");
  // Encoding the rows again in the same dtype gives the same bytes, except
  // that a BF16 NaN may come back with its quiet bit set (still a NaN).
  moe::v1::Tensor again;
  moe::EncodeRows(rows->data, rows->rows, rows->cols, tensor->dtype(), &again);
  moe::fuzz::Check(again.data().size() == bytes, "re-encoded size differs");
  const int64_t count = rows->rows * rows->cols;
  for (int64_t i = 0; i < count; ++i) {
    const char* was = tensor->data().data() + i * element;
    const char* now = again.data().data() + i * element;
    if (std::memcmp(was, now, element) == 0) continue;
    moe::fuzz::Check(std::isnan(rows->data[i]),
                     "EncodeRows(DecodeF32Rows(x)) differs from x");
  }
  return 0;
}
