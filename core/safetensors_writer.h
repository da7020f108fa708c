// Writes safetensors files (for the model generator and tests).
#ifndef MOE_CORE_SAFETENSORS_WRITER_H_
#define MOE_CORE_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/dtype.h"

namespace moe {

// One tensor to write. `fill` writes exactly NumBytes() bytes of data to `dst`
// (called once, in file order, so large tensors are produced streaming).
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  std::function<void(char* dst)> fill;

  int64_t NumElements() const;
  int64_t NumBytes() const { return NumElements() * DTypeSize(dtype); }
};

// Writes a valid safetensors file with `tensors` in the given order and a
// {"format": "pt"} metadata entry. `progress(bytes_done, bytes_total)` is
// called as data is written, if set.
absl::Status WriteSafetensors(
    const std::string& path, const std::vector<TensorToWrite>& tensors,
    const std::function<void(int64_t, int64_t)>& progress = nullptr);

}  // namespace moe

#endif  // MOE_CORE_SAFETENSORS_WRITER_H_
