// Non-owning views of stored tensors (typically memory-mapped weights).
#ifndef MOE_CORE_TENSOR_H_
#define MOE_CORE_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace moe {

// A read-only, row-major tensor in its stored dtype. Does not own `data`; the
// owner (e.g. a SafetensorsFile mapping) must outlive every view.
struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  bool empty() const { return data == nullptr; }
  int64_t NumElements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t NumBytes() const { return NumElements() * DTypeSize(dtype); }
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  // Elements per row (product of all dims but the first).
  int64_t cols() const {
    int64_t n = 1;
    for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
    return n;
  }
  float At(int64_t i) const { return LoadAsFloat(data, dtype, i); }
  // View of row `r` (shape [cols]).
  const void* Row(int64_t r) const {
    return static_cast<const char*>(data) + r * cols() * DTypeSize(dtype);
  }
};

// "[2, 3]"
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace moe

#endif  // MOE_CORE_TENSOR_H_
