// CUDA kernels of the forward pass and the expert FFN. The residual stream
// and every reduction are float32; weights (and GEMM inputs) are BF16.
// Every pointer is a device pointer; every function enqueues its kernel on
// `stream` and returns the launch error (INTERNAL naming the kernel), not
// the completion. Sizes of zero enqueue nothing. Each kernel matches its
// CPU counterpart in core/cpu/kernels.h (tests/gpu/cuda_kernels_test.cc).
#ifndef MOE_CORE_CUDA_KERNELS_H_
#define MOE_CORE_CUDA_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace moe::cuda {

using bf16 = __nv_bfloat16;

// y[r] = x[r] / rms(x[r]) * weight for `rows` rows of n values, row stride
// ld (same for x and y; in place when x == y). rms = sqrt(mean(x^2) + eps).
absl::Status RmsNorm(const float* x, int64_t rows, int64_t n, int64_t ld,
                     const bf16* weight, float eps, float* y,
                     cudaStream_t stream);
// The same with BF16 output in dense rows [rows, n] (a GEMM's input).
absl::Status RmsNormToBf16(const float* x, int64_t rows, int64_t n,
                           int64_t ld, const bf16* weight, float eps, bf16* y,
                           cudaStream_t stream);

// Rotate-half RoPE in place, with Hugging Face's float32 numerics (as
// cpu::ApplyRope): x is [tokens, ld] with `heads` heads of head_dim at the
// start of each row; positions[tokens].
absl::Status ApplyRope(float* x, int64_t tokens, int64_t ld, int64_t heads,
                       int64_t head_dim, const int32_t* positions,
                       double theta, cudaStream_t stream);

// out[t, i] = bf16(silu(g) * u) with g = gate_up[t, i], u = gate_up[t,
// inter + i] widened to float32, for gate_up [tokens, 2 * inter] (the fused
// gate|up GEMM's BF16 output).
absl::Status SiluMulToBf16(const bf16* gate_up, int64_t tokens,
                           int64_t inter, bf16* out, cudaStream_t stream);

// y[r, i] += bias[i] for rows r < rows, i < n, row stride ld.
absl::Status AddBias(float* y, int64_t rows, int64_t n, int64_t ld,
                     const bf16* bias, cudaStream_t stream);
// x[i] = clamp(x[i], -limit, limit).
absl::Status Clamp(float* x, int64_t n, float limit, cudaStream_t stream);
// y[i] += x[i].
absl::Status AddInPlace(float* y, const float* x, int64_t n,
                        cudaStream_t stream);
// y[t, i] += sigmoid(gate[t]) * x[t, i] for t < tokens, i < n (dense rows).
absl::Status AddSigmoidGated(float* y, const float* x, const float* gate,
                             int64_t tokens, int64_t n, cudaStream_t stream);
// dst[i] = bf16(src[i]).
absl::Status ToBf16(const float* src, int64_t n, bf16* dst,
                    cudaStream_t stream);
// dst[i] = float(src[i]).
absl::Status FromBf16(const bf16* src, int64_t n, float* dst,
                      cudaStream_t stream);
// out[t, :] = float(table[ids[t], :]) for t < tokens; table [vocab, hidden].
absl::Status Embed(const bf16* table, const int32_t* ids, int64_t tokens,
                   int64_t hidden, float* out, cudaStream_t stream);
// out[r, :] = bf16(x[rows[r], :]) for r < count, x dense [?, n].
absl::Status GatherRowsToBf16(const float* x, const int32_t* rows,
                              int64_t count, int64_t n, bf16* out,
                              cudaStream_t stream);
// The MoE combine: out[t, :] = sum over j < k of weight[t, j] *
// expert_out[row[t, j], :] for t < tokens; row and weight are [tokens, k].
// Each token's terms are added in ascending row order: with rows grouped by
// ascending expert (as CudaTransformer lays them out) that is the CPU
// executor's ascending expert order. Embed does not check ids: callers do.
absl::Status CombineExperts(const float* expert_out, const int32_t* row,
                            const float* weight, int64_t tokens, int k,
                            int64_t hidden, float* out, cudaStream_t stream);

// Top-k gating as RouteFromLogits (core/gating.h): softmax over the
// num_experts logits of each token in float32, the k largest (ties: lower
// id first) in descending order, divided by their sum when `renormalize`.
// experts and weights are [tokens, k]. k <= 32, num_experts <= 1024.
absl::Status TopKGating(const float* logits, int64_t tokens, int num_experts,
                        int k, bool renormalize, int32_t* experts,
                        float* weights, cudaStream_t stream);

// out[r] = index of the largest of logits[r, 0..n) (lowest among equals),
// as core/sampling.h ArgMax.
absl::Status ArgMaxRows(const float* logits, int64_t rows, int64_t n,
                        int32_t* out, cudaStream_t stream);
// One draw per row from softmax(logits[r] / temperature[r]) restricted to
// its top_k[r] (0: all) and top_p[r] nucleus, with the uniform number u[r]
// in [0, 1) chosen by the host, by inverse CDF over the kept tokens sorted
// by descending logit (ties: lower id first): the token whose cumulative
// probability first exceeds u (top_p as Sampler: the smallest prefix whose
// mass reaches it, renormalised). temperature[r] == 0 means argmax. Matches
// Sampler::Sample (core/sampling.cc) after its repetition penalty, given
// the same u. n <= 262144.
absl::Status SampleRows(const float* logits, int64_t rows, int64_t n,
                        const float* temperature, const int32_t* top_k,
                        const float* top_p, const double* u, int32_t* out,
                        cudaStream_t stream);

}  // namespace moe::cuda

#endif  // MOE_CORE_CUDA_KERNELS_H_
