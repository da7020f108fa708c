// CPU kernels. Activations are float32, row-major; weights are TensorViews in
// their stored dtype (BF16/F16/F32), widened on the fly; every reduction
// accumulates in float32. One implementation file per operation.
#ifndef MOE_CORE_CPU_KERNELS_H_
#define MOE_CORE_CPU_KERNELS_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace moe::cpu {

// One product y[m, n] = x[m, k] · w[n, k]^T, with w = [n, k] (a PyTorch
// Linear weight). Row strides ldx/ldy are in elements.
struct MatMulJob {
  const float* x = nullptr;
  int64_t m = 0;
  int64_t ldx = 0;
  const TensorView* w = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
};

// Runs every job, splitting all jobs' output columns across the pool in one
// dispatch (so e.g. q/k/v, or the gate/up projections of many experts, cost
// one synchronisation). Jobs must not write overlapping outputs.
void MatMul(absl::Span<const MatMulJob> jobs, ThreadPool* pool);

// Convenience: y[m, n] = x[m, k] · w^T with dense rows.
void MatMul(const float* x, int64_t m, const TensorView& w, float* y,
            ThreadPool* pool);

// Same as MatMul but single-threaded and scalar: the reference the optimised
// paths are tested against.
void MatMulReference(const MatMulJob& job);

// True when the AVX-512 path is in use on this CPU.
bool HasAvx512MatMul();
// Forces the portable path (tests; MOE_DISABLE_AVX512=1 does the same).
void SetAvx512MatMulEnabled(bool enabled);

// y[i, :] += bias for i in [0, m).
void AddBias(float* y, int64_t m, int64_t ldy, const TensorView& bias);

// y[i] = x[i] / rms(x[i]) * weight, rms over n elements, for m rows of
// stride ld. In place when x == y.
void RmsNorm(const float* x, int64_t m, int64_t n, int64_t ld,
             const TensorView& weight, float eps, float* y);

// Rotate-half RoPE (Hugging Face): for each token t and head, pairs
// (i, i + d/2) rotated by angle pos[t] * theta^(-2i/d). x is [tokens, ld]
// with `heads` heads of `head_dim` at the start of each row.
void ApplyRope(float* x, int64_t tokens, int64_t ld, int64_t heads,
               int64_t head_dim, const int32_t* positions, double theta);

// out[i] = silu(gate[i]) * up[i].
void SiluMul(const float* gate, const float* up, float* out, int64_t n);

// In-place softmax over n values.
void Softmax(float* x, int64_t n);

float Sigmoid(float x);

// Clamp to [-limit, limit].
void Clamp(float* x, int64_t n, float limit);

}  // namespace moe::cpu

#endif  // MOE_CORE_CPU_KERNELS_H_
