#include "core/cuda/gemm.h"

#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_status.h"

namespace moe::cuda {

absl::StatusOr<Gemm> Gemm::Create(cudaStream_t stream) {
  absl::StatusOr<const CublasApi*> api = LoadCublas();
  if (!api.ok()) return api.status();
  cublasHandle_t handle = nullptr;
  MOE_CUBLAS_RETURN_IF_ERROR((*api)->create(&handle));
  absl::Status status =
      CublasStatus((*api)->set_stream(handle, stream), "cublasSetStream");
  // Tensor-core math with float32 accumulation (the compute type below);
  // no reduced-precision reductions.
  if (status.ok()) {
    status = CublasStatus((*api)->set_math_mode(handle, CUBLAS_DEFAULT_MATH),
                          "cublasSetMathMode");
  }
  if (!status.ok()) {
    (*api)->destroy(handle);
    return status;
  }
  return Gemm(*api, handle, stream);
}

Gemm::Gemm(Gemm&& other) noexcept
    : api_(other.api_),
      handle_(std::exchange(other.handle_, nullptr)),
      stream_(other.stream_),
      pointers_(std::move(other.pointers_)),
      host_pointers_(std::move(other.host_pointers_)) {}

Gemm::~Gemm() {
  if (handle_ != nullptr) api_->destroy(handle_);
}

// Row-major y[m, n] = x[m, k] · w[n, k]^T is column-major y^T[n, m] =
// w^T · x^T: cuBLAS sees A = w as a column-major [k, n] matrix (op T), B = x
// as [k, m] (op N), C = y as [n, m] with leading dimension ldy.
absl::Status Gemm::Bf16ToF32(const __nv_bfloat16* x, int64_t m, int64_t k,
                             const __nv_bfloat16* w, int64_t n, float* y,
                             int64_t ldy, bool accumulate) {
  if (m == 0 || n == 0) return absl::OkStatus();
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  MOE_CUBLAS_RETURN_IF_ERROR(api_->gemm_ex(
      handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
      static_cast<int>(m), static_cast<int>(k), &alpha, w, CUDA_R_16BF,
      static_cast<int>(k), x, CUDA_R_16BF, static_cast<int>(k), &beta, y,
      CUDA_R_32F, static_cast<int>(ldy), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

absl::Status Gemm::GroupedBf16(absl::Span<const Problem> problems) {
  // cuBLAS groups: problems of one (m, n, k) form one group; within a
  // group the A, B and C pointers are consecutive in the pointer arrays.
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::vector<const Problem*>>
      by_shape;
  for (const Problem& p : problems) {
    if (p.m == 0 || p.n == 0) continue;
    by_shape[{p.m, p.n, p.k}].push_back(&p);
  }
  if (by_shape.empty()) return absl::OkStatus();
  const int groups = static_cast<int>(by_shape.size());
  std::vector<cublasOperation_t> trans_a(groups, CUBLAS_OP_T),
      trans_b(groups, CUBLAS_OP_N);
  std::vector<int> m(groups), n(groups), k(groups), lda(groups), ldb(groups),
      ldc(groups), size(groups);
  std::vector<float> alpha(groups, 1.0f), beta(groups, 0.0f);
  int total = 0;
  for (const auto& [shape, list] : by_shape) total += list.size();
  host_pointers_.assign(3 * total, nullptr);
  int g = 0, at = 0;
  for (const auto& [shape, list] : by_shape) {
    const auto [pm, pn, pk] = shape;
    m[g] = static_cast<int>(pn);  // column-major: rows of C are y's columns
    n[g] = static_cast<int>(pm);
    k[g] = static_cast<int>(pk);
    lda[g] = static_cast<int>(pk);
    ldb[g] = static_cast<int>(pk);
    ldc[g] = static_cast<int>(pn);
    size[g] = static_cast<int>(list.size());
    for (const Problem* p : list) {
      host_pointers_[at] = p->w;
      host_pointers_[total + at] = p->x;
      host_pointers_[2 * total + at] = p->y;
      ++at;
    }
    ++g;
  }
  // The pointer arrays must be in device memory; the copy is ordered on the
  // stream before the GEMM that reads them. A copy from pageable memory
  // returns once the host bytes are staged, so host_pointers_ may be
  // rewritten by the next call; the next call's device copy is ordered after
  // this GEMM on the stream.
  const size_t bytes = host_pointers_.size() * sizeof(const void*);
  if (absl::Status s = pointers_.Reserve(host_pointers_.size()); !s.ok()) {
    return s;
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(pointers_.data(),
                                           host_pointers_.data(), bytes,
                                           cudaMemcpyHostToDevice, stream_));
  const void* const* a = pointers_.data();
  const void* const* b = pointers_.data() + total;
  void* const* c = const_cast<void* const*>(pointers_.data() + 2 * total);
  MOE_CUBLAS_RETURN_IF_ERROR(api_->gemm_grouped_batched_ex(
      handle_, trans_a.data(), trans_b.data(), m.data(), n.data(), k.data(),
      alpha.data(), a, CUDA_R_16BF, lda.data(), b, CUDA_R_16BF, ldb.data(),
      beta.data(), c, CUDA_R_16BF, ldc.data(), groups, size.data(),
      CUBLAS_COMPUTE_32F));
  return absl::OkStatus();
}

}  // namespace moe::cuda
