#include "core/cuda/device_weights.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/cuda/cuda_status.h"
#include "core/dtype.h"

namespace moe::cuda {

absl::StatusOr<DeviceBuffer<__nv_bfloat16>> UploadAsBf16(
    absl::Span<const TensorView* const> tensors) {
  int64_t total = 0;
  for (const TensorView* t : tensors) total += t->NumElements();
  DeviceBuffer<__nv_bfloat16> buffer;
  if (total == 0) return buffer;
  if (absl::Status s = buffer.Reserve(total); !s.ok()) return s;
  // Staged through one host buffer per tensor; BF16 bits are what
  // __nv_bfloat16 stores, so BF16 tensors go up as they are.
  std::vector<uint16_t> staging;
  int64_t at = 0;
  for (const TensorView* t : tensors) {
    const int64_t n = t->NumElements();
    if (n == 0) continue;
    const void* src = t->data;
    if (t->dtype != DType::kBF16) {
      staging.resize(n);
      for (int64_t i = 0; i < n; ++i) staging[i] = FloatToBF16(t->At(i));
      src = staging.data();
    }
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpy(buffer.data() + at, src,
                                        n * sizeof(uint16_t),
                                        cudaMemcpyHostToDevice));
    at += n;
  }
  return buffer;
}

}  // namespace moe::cuda
