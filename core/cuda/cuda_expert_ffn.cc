#include "core/cuda/cuda_expert_ffn.h"

#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_status.h"
#include "core/cuda/device_weights.h"
#include "core/status_macros.h"

namespace moe::cuda {

absl::StatusOr<std::unique_ptr<CudaExpertFfn>> CudaExpertFfn::Create(
    int ordinal, absl::Span<const FfnWeights* const> experts) {
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
  cudaDeviceProp prop;
  MOE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, ordinal));
  cudaStream_t stream = nullptr;
  MOE_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  absl::StatusOr<Gemm> gemm = Gemm::Create(stream);
  if (!gemm.ok()) {
    cudaStreamDestroy(stream);
    return gemm.status();
  }
  std::unique_ptr<CudaExpertFfn> ffn(
      new CudaExpertFfn(ordinal, stream, *std::move(gemm)));
  ffn->name_ = absl::StrCat("cuda:", ordinal, " (", prop.name, ")");
  for (const FfnWeights* w : experts) {
    const int64_t hidden = w->gate.cols();
    if (ffn->hidden_ == 0) ffn->hidden_ = hidden;
    if (hidden != ffn->hidden_ || w->up.cols() != hidden ||
        w->down.rows() != hidden || w->up.rows() != w->gate.rows() ||
        w->down.cols() != w->gate.rows()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert FFN shapes disagree: gate [", w->gate.rows(), ", ",
          w->gate.cols(), "], up [", w->up.rows(), ", ", w->up.cols(),
          "], down [", w->down.rows(), ", ", w->down.cols(),
          "], hidden size ", ffn->hidden_));
    }
    auto expert = std::make_unique<DeviceExpert>();
    const TensorView* gate_up[] = {&w->gate, &w->up};
    ASSIGN_OR_RETURN(expert->gate_up, UploadAsBf16(gate_up));
    ASSIGN_OR_RETURN(expert->down, UploadAsBf16(w->down));
    expert->inter = w->gate.rows();
    ffn->weight_bytes_ += expert->gate_up.bytes() + expert->down.bytes();
    ffn->experts_[w] = std::move(expert);
  }
  return ffn;
}

CudaExpertFfn::~CudaExpertFfn() {
  cudaSetDevice(ordinal_);
  cudaStreamSynchronize(stream_);
  experts_.clear();
  cudaStreamDestroy(stream_);
}

int64_t CudaExpertFfn::WeightBytesOf(const FfnWeights* weights) const {
  auto it = experts_.find(weights);
  if (it == experts_.end()) return 0;
  return it->second->gate_up.bytes() + it->second->down.bytes();
}

absl::StatusOr<const CudaExpertFfn::DeviceExpert*> CudaExpertFfn::Find(
    const FfnWeights* weights) const {
  auto it = experts_.find(weights);
  if (it == experts_.end()) {
    return absl::InvalidArgumentError(
        "expert FFN group names an expert that was not uploaded to this "
        "device");
  }
  return it->second.get();
}

absl::Status CudaExpertFfn::RunOnDevice(
    absl::Span<const DeviceFfnGroup> groups) {
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  // Scratch: every group's gate|up rows [tokens, 2 * inter] and activated
  // rows [tokens, inter], back to back.
  std::vector<const DeviceExpert*> experts(groups.size());
  int64_t gate_up_elems = 0, act_elems = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    ASSIGN_OR_RETURN(experts[g], Find(groups[g].weights));
    gate_up_elems += groups[g].tokens * 2 * experts[g]->inter;
    act_elems += groups[g].tokens * experts[g]->inter;
  }
  RETURN_IF_ERROR(gate_up_.Reserve(gate_up_elems));
  RETURN_IF_ERROR(act_.Reserve(act_elems));

  std::vector<Gemm::Problem> problems;
  problems.reserve(groups.size());
  int64_t gu_at = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t inter = experts[g]->inter;
    problems.push_back({groups[g].x, experts[g]->gate_up.data(),
                        gate_up_.data() + gu_at, groups[g].tokens, 2 * inter,
                        hidden_});
    gu_at += groups[g].tokens * 2 * inter;
  }
  RETURN_IF_ERROR(gemm_.GroupedBf16(problems));

  gu_at = 0;
  int64_t act_at = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t inter = experts[g]->inter;
    RETURN_IF_ERROR(SiluMulToBf16(gate_up_.data() + gu_at, groups[g].tokens,
                                  inter, act_.data() + act_at, stream_));
    gu_at += groups[g].tokens * 2 * inter;
    act_at += groups[g].tokens * inter;
  }

  problems.clear();
  act_at = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t inter = experts[g]->inter;
    problems.push_back({act_.data() + act_at, experts[g]->down.data(),
                        groups[g].out, groups[g].tokens, hidden_, inter});
    act_at += groups[g].tokens * inter;
  }
  return gemm_.GroupedBf16(problems);
}

absl::Status CudaExpertFfn::Run(absl::Span<const FfnGroup> groups) {
  MOE_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  int64_t rows = 0;
  for (const FfnGroup& g : groups) rows += g.tokens;
  if (rows == 0) return absl::OkStatus();
  const int64_t h = hidden_;
  // Inputs up as float32 in one copy, rounded to BF16 on the device.
  RETURN_IF_ERROR(host_io_.Reserve(rows * h));
  int64_t at = 0;
  for (const FfnGroup& g : groups) {
    std::copy(g.x, g.x + g.tokens * h, host_io_.data() + at * h);
    at += g.tokens;
  }
  RETURN_IF_ERROR(io_.Reserve(rows * h));
  RETURN_IF_ERROR(x_bf16_.Reserve(rows * h));
  RETURN_IF_ERROR(out_bf16_.Reserve(rows * h));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(io_.data(), host_io_.data(),
                                           rows * h * sizeof(float),
                                           cudaMemcpyHostToDevice, stream_));
  RETURN_IF_ERROR(ToBf16(io_.data(), rows * h, x_bf16_.data(), stream_));
  std::vector<DeviceFfnGroup> device_groups;
  device_groups.reserve(groups.size());
  at = 0;
  for (const FfnGroup& g : groups) {
    device_groups.push_back({g.weights, x_bf16_.data() + at * h, g.tokens,
                             out_bf16_.data() + at * h});
    at += g.tokens;
  }
  RETURN_IF_ERROR(RunOnDevice(device_groups));
  RETURN_IF_ERROR(FromBf16(out_bf16_.data(), rows * h, io_.data(), stream_));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_io_.data(), io_.data(),
                                           rows * h * sizeof(float),
                                           cudaMemcpyDeviceToHost, stream_));
  MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  at = 0;
  for (const FfnGroup& g : groups) {
    std::copy(host_io_.data() + at * h, host_io_.data() + (at + g.tokens) * h,
              g.out);
    at += g.tokens;
  }
  return absl::OkStatus();
}

}  // namespace moe::cuda
