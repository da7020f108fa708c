// The CUDA expert backend: the FFN weights of many experts resident on one
// device as BF16, and grouped SwiGLU FFNs over them: one grouped GEMM for
// the fused gate|up projection of every group, a fused SiLU·up kernel, and
// one grouped GEMM for every group's down projection.
#ifndef MOE_CORE_CUDA_CUDA_EXPERT_FFN_H_
#define MOE_CORE_CUDA_CUDA_EXPERT_FFN_H_

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/cuda/device_buffer.h"
#include "core/cuda/gemm.h"
#include "core/cuda/kernels.h"
#include "core/expert_backend.h"
#include "core/model_weights.h"

namespace moe::cuda {

// One group on the device: x [tokens, hidden] BF16 in, out [tokens, hidden]
// BF16 out (device pointers).
struct DeviceFfnGroup {
  const FfnWeights* weights = nullptr;
  const bf16* x = nullptr;
  int64_t tokens = 0;
  bf16* out = nullptr;
};

// Not thread-safe: one executor thread per device calls Run (each call makes
// the device current on the calling thread).
class CudaExpertFfn final : public ExpertFfnBackend {
 public:
  // Uploads `experts` (borrowed only during the call) to device `ordinal`:
  // gate and up concatenated into one [2 * intermediate, hidden] matrix,
  // down as [hidden, intermediate], all BF16. Experts may differ in
  // intermediate size (a shared expert) but must share `hidden`.
  // RESOURCE_EXHAUSTED naming the bytes when they do not fit.
  static absl::StatusOr<std::unique_ptr<CudaExpertFfn>> Create(
      int ordinal, absl::Span<const FfnWeights* const> experts);
  ~CudaExpertFfn() override;

  std::string name() const override { return name_; }
  // Host float32 in and out: copies the groups' rows to the device, runs
  // RunOnDevice and copies the results back.
  absl::Status Run(absl::Span<const FfnGroup> groups) override;

  // Enqueues the groups on stream() without waiting; the caller synchronises
  // (or enqueues more work after it on the same stream). Scratch is owned by
  // this object: one RunOnDevice in flight at a time.
  absl::Status RunOnDevice(absl::Span<const DeviceFfnGroup> groups);

  int ordinal() const { return ordinal_; }
  cudaStream_t stream() const { return stream_; }
  int64_t hidden() const { return hidden_; }
  // Bytes of expert weights resident on the device.
  int64_t weight_bytes() const { return weight_bytes_; }
  // Bytes of weights one group reads (gate, up, down).
  int64_t WeightBytesOf(const FfnWeights* weights) const;

 private:
  struct DeviceExpert {
    DeviceBuffer<bf16> gate_up;  // [2 * inter, hidden]
    DeviceBuffer<bf16> down;     // [hidden, inter]
    int64_t inter = 0;
  };
  CudaExpertFfn(int ordinal, cudaStream_t stream, Gemm gemm)
      : ordinal_(ordinal), stream_(stream), gemm_(std::move(gemm)) {}
  absl::StatusOr<const DeviceExpert*> Find(const FfnWeights* weights) const;

  int ordinal_;
  cudaStream_t stream_;
  Gemm gemm_;
  std::string name_;
  int64_t hidden_ = 0;
  int64_t weight_bytes_ = 0;
  absl::flat_hash_map<const FfnWeights*, std::unique_ptr<DeviceExpert>>
      experts_;
  // Scratch, grown as needed.
  DeviceBuffer<bf16> gate_up_, act_, x_bf16_, out_bf16_;
  DeviceBuffer<float> io_;
  PinnedBuffer<float> host_io_;  // Run's rows, in and out
};

}  // namespace moe::cuda

#endif  // MOE_CORE_CUDA_CUDA_EXPERT_FFN_H_
