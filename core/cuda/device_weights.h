// Copying checkpoint tensors to the device as BF16 (the dtype every CUDA
// GEMM reads): BF16 tensors are copied as they are, F16 and F32 tensors are
// rounded to BF16 on the host first.
#ifndef MOE_CORE_CUDA_DEVICE_WEIGHTS_H_
#define MOE_CORE_CUDA_DEVICE_WEIGHTS_H_

#include <cuda_bf16.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/cuda/device_buffer.h"
#include "core/tensor.h"

namespace moe::cuda {

// The tensors' elements, concatenated in order, in one device buffer (so
// gate and up of one expert become one [2 * inter, hidden] matrix). Empty
// tensors contribute nothing. RESOURCE_EXHAUSTED when the device is full.
absl::StatusOr<DeviceBuffer<__nv_bfloat16>> UploadAsBf16(
    absl::Span<const TensorView* const> tensors);

// One tensor.
inline absl::StatusOr<DeviceBuffer<__nv_bfloat16>> UploadAsBf16(
    const TensorView& tensor) {
  const TensorView* one[] = {&tensor};
  return UploadAsBf16(one);
}

}  // namespace moe::cuda

#endif  // MOE_CORE_CUDA_DEVICE_WEIGHTS_H_
