// Helpers for kernel tests: weight tensors that own their storage, and
// random data.
#ifndef MOE_TESTS_KERNEL_TEST_UTIL_H_
#define MOE_TESTS_KERNEL_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace moe::testing {

// A tensor in `dtype` holding `values` (rounded to the dtype), with a view
// of it. Movable (the storage moves with it), not copyable.
class OwnedTensor {
 public:
  OwnedTensor(DType dtype, std::vector<int64_t> shape,
              const std::vector<float>& values)
      : bytes_(values.size() * DTypeSize(dtype)) {
    for (size_t i = 0; i < values.size(); ++i) {
      StoreFromFloat(bytes_.data(), dtype, i, values[i]);
    }
    view_.data = bytes_.data();
    view_.dtype = dtype;
    view_.shape = std::move(shape);
  }
  OwnedTensor(OwnedTensor&&) = default;
  OwnedTensor& operator=(OwnedTensor&&) = default;
  OwnedTensor(const OwnedTensor&) = delete;
  OwnedTensor& operator=(const OwnedTensor&) = delete;

  const TensorView& view() const { return view_; }
  // Element i as stored, widened.
  double At(int64_t i) const { return view_.At(i); }

 private:
  std::vector<char> bytes_;
  TensorView view_;
};

// `n` values uniform in [lo, hi).
inline std::vector<float> RandomValues(int64_t n, std::mt19937& rng,
                                       float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> out(n);
  for (float& v : out) v = dist(rng);
  return out;
}

}  // namespace moe::testing

#endif  // MOE_TESTS_KERNEL_TEST_UTIL_H_
