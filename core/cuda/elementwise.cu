// Elementwise and per-row kernels of core/cuda/kernels.h: RMSNorm, RoPE,
// SiLU·up, residual additions, dtype conversions, the embedding lookup, row
// gathers and the MoE combine.
//
// Numerics follow the CPU backend operation for operation. nvcc contracts
// a * b + c into an FMA by default, which the CPU build (no -mfma) never
// does, so where the CPU code adds a product the kernels spell the two
// roundings out with __fmul_rn/__fadd_rn; everything else is plain IEEE
// float arithmetic (this file must not be built with --use_fast_math).
//
// Layout: one block per row for row operations (a row reduction is a warp
// shuffle tree plus one shared-memory step), grid-stride loops over rows
// and over flat arrays, 16-byte loads (4 floats or 4 BF16 in 8 bytes) when
// every pointer, row stride and length allows them, scalar otherwise.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_status.h"
#include "core/cuda/kernels.h"
#include "core/status_macros.h"

namespace moe::cuda {
namespace {

constexpr int kWarpSize = 32;
constexpr int kMaxBlockThreads = 1024;
constexpr int kFlatThreads = 256;
// Grids are capped here and grid-stride over the rest (gridDim.x allows
// 2^31 - 1, but a few waves of blocks are all a GPU can run at once).
constexpr int64_t kMaxGridBlocks = int64_t{1} << 16;
// RoPE's inverse frequencies travel as a kernel argument (1 KiB).
constexpr int kMaxRopeHalf = 256;
// CombineExperts keeps a token's k (row, weight) pairs in shared memory.
constexpr int kMaxCombineK = 1024;

// ---------------------------------------------------------------------------
// Host helpers.

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

unsigned GridBlocks(int64_t blocks) {
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxGridBlocks));
}

// Threads of a block that owns a row of n values, `vec` per load: enough
// warps to cover the row in one sweep, at most 1024.
int RowThreads(int64_t n, int vec) {
  const int64_t warps = CeilDiv(CeilDiv(n, vec), kWarpSize);
  return static_cast<int>(
      std::clamp<int64_t>(warps * kWarpSize, kWarpSize, kMaxBlockThreads));
}

bool Aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// True when 4-wide accesses are possible: every length/stride a multiple of
// 4 and every pointer aligned for 4 of its elements (16 bytes for float, 8
// for BF16).
bool Vec4(std::initializer_list<int64_t> lengths,
          std::initializer_list<const float*> floats,
          std::initializer_list<const bf16*> bf16s) {
  for (int64_t v : lengths) {
    if (v % 4 != 0) return false;
  }
  for (const float* p : floats) {
    if (!Aligned(p, 16)) return false;
  }
  for (const bf16* p : bf16s) {
    if (!Aligned(p, 8)) return false;
  }
  return true;
}

// INVALID_ARGUMENT naming the kernel and the first negative size.
absl::Status CheckSizes(
    const char* kernel,
    std::initializer_list<std::pair<const char*, int64_t>> sizes) {
  for (const auto& [name, value] : sizes) {
    if (value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kernel, ": ", name, " = ", value, " is negative"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckStride(const char* kernel, int64_t ld, int64_t n) {
  if (ld >= n) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      kernel, ": row stride ld = ", ld, " is smaller than the row, n = ", n));
}

// ---------------------------------------------------------------------------
// Device helpers.

// kVec consecutive elements, aligned so that one load moves them all.
template <int kVec>
struct alignas(4 * kVec) FloatVec {
  float v[kVec];
};
template <int kVec>
struct alignas(2 * kVec) Bf16Vec {
  bf16 v[kVec];
};

template <int kVec>
__device__ __forceinline__ FloatVec<kVec> LoadF(const float* p) {
  return *reinterpret_cast<const FloatVec<kVec>*>(p);
}
template <int kVec>
__device__ __forceinline__ void StoreF(float* p, const FloatVec<kVec>& v) {
  *reinterpret_cast<FloatVec<kVec>*>(p) = v;
}
// BF16 loads widen, stores round to nearest even.
template <int kVec>
__device__ __forceinline__ FloatVec<kVec> LoadB(const bf16* p) {
  const Bf16Vec<kVec> b = *reinterpret_cast<const Bf16Vec<kVec>*>(p);
  FloatVec<kVec> f;
#pragma unroll
  for (int j = 0; j < kVec; ++j) f.v[j] = __bfloat162float(b.v[j]);
  return f;
}
template <int kVec>
__device__ __forceinline__ void StoreB(bf16* p, const FloatVec<kVec>& f) {
  Bf16Vec<kVec> b;
#pragma unroll
  for (int j = 0; j < kVec; ++j) b.v[j] = __float2bfloat16_rn(f.v[j]);
  *reinterpret_cast<Bf16Vec<kVec>*>(p) = b;
}
template <int kVec>
__device__ __forceinline__ void StoreOut(float* p, const FloatVec<kVec>& f) {
  StoreF<kVec>(p, f);
}
template <int kVec>
__device__ __forceinline__ void StoreOut(bf16* p, const FloatVec<kVec>& f) {
  StoreB<kVec>(p, f);
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Sum of v over the block, returned to every thread. blockDim.x must be a
// multiple of 32; every thread of the block must call it.
__device__ float BlockSum(float v) {
  __shared__ float warp_sums[kMaxBlockThreads / kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = WarpSum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / kWarpSize;
  v = WarpSum(lane < warps ? warp_sums[lane] : 0.0f);
  __syncthreads();  // warp_sums is reused by the next call
  return v;
}

// ---------------------------------------------------------------------------
// Kernels.

// One block per row: the mean of squares in float32 (per-thread partial
// sums, then a shuffle tree), then y = x * inv_rms * weight as the CPU
// orders it.
template <int kVec, typename Out>
__global__ void RmsNormKernel(const float* x, int64_t rows, int64_t n,
                              int64_t ld_x, const bf16* weight, float eps,
                              Out* y, int64_t ld_y) {
  const int64_t step = int64_t{blockDim.x} * kVec;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * ld_x;
    float sum_sq = 0.0f;
    for (int64_t i = int64_t{threadIdx.x} * kVec; i < n; i += step) {
      const FloatVec<kVec> v = LoadF<kVec>(xr + i);
#pragma unroll
      for (int j = 0; j < kVec; ++j) sum_sq += v.v[j] * v.v[j];
    }
    const float inv =
        1.0f / sqrtf(BlockSum(sum_sq) / static_cast<float>(n) + eps);
    Out* yr = y + r * ld_y;
    for (int64_t i = int64_t{threadIdx.x} * kVec; i < n; i += step) {
      FloatVec<kVec> v = LoadF<kVec>(xr + i);
      const FloatVec<kVec> w = LoadB<kVec>(weight + i);
#pragma unroll
      for (int j = 0; j < kVec; ++j) v.v[j] = v.v[j] * inv * w.v[j];
      StoreOut<kVec>(yr + i, v);
    }
  }
}

template <typename Out>
absl::Status LaunchRmsNorm(const char* name, const float* x, int64_t rows,
                           int64_t n, int64_t ld, const bf16* weight, float eps,
                           Out* y, int64_t ld_y, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckSizes(name, {{"rows", rows}, {"n", n}}));
  RETURN_IF_ERROR(CheckStride(name, ld, n));
  if (rows == 0 || n == 0) return absl::OkStatus();
  const bool vec =
      Vec4({n, ld, ld_y}, {x}, {weight}) && Aligned(y, 4 * sizeof(Out));
  const unsigned grid = GridBlocks(rows);
  if (vec) {
    RmsNormKernel<4, Out><<<grid, RowThreads(n, 4), 0, stream>>>(
        x, rows, n, ld, weight, eps, y, ld_y);
  } else {
    RmsNormKernel<1, Out><<<grid, RowThreads(n, 1), 0, stream>>>(
        x, rows, n, ld, weight, eps, y, ld_y);
  }
  return LaunchStatus(name);
}

// The angles' inverse frequencies, computed on the host exactly as
// cpu::ApplyRope does, so they are the same floats.
struct RopeFreqs {
  float inv_freq[kMaxRopeHalf];
};

// One block per token: cos/sin of the token's `half` angles into shared
// memory once, then every (head, i) pair of the token rotated with the
// CPU's roundings (two products, then their difference or sum).
__global__ void RopeKernel(float* x, int64_t tokens, int64_t ld, int64_t heads,
                           int head_dim, const int32_t* positions,
                           RopeFreqs freqs) {
  __shared__ float cos_v[kMaxRopeHalf];
  __shared__ float sin_v[kMaxRopeHalf];
  const int half = head_dim / 2;  // an odd head_dim's last value stays
  const int64_t pairs = heads * half;
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const float pos = static_cast<float>(positions[t]);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      // Precise sincosf (not __sincosf): full range reduction, <= 2 ulp
      // from the CPU's std::cos/std::sin of the same float angle.
      const float angle = pos * freqs.inv_freq[i];
      sincosf(angle, &sin_v[i], &cos_v[i]);
    }
    __syncthreads();
    float* row = x + t * ld;
    for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x) {
      const int64_t h = p / half;
      const int i = static_cast<int>(p - h * half);
      float* v = row + h * head_dim;
      const float a = v[i];
      const float b = v[i + half];
      v[i] = __fsub_rn(__fmul_rn(a, cos_v[i]), __fmul_rn(b, sin_v[i]));
      v[i + half] = __fadd_rn(__fmul_rn(b, cos_v[i]), __fmul_rn(a, sin_v[i]));
    }
    __syncthreads();  // cos_v/sin_v are rewritten for the next token
  }
}

// A block per row of n values, kVec consecutive values per call of
// op.Apply<kVec>(row, column).
template <int kVec, typename Op>
__global__ void RowKernel(int64_t rows, int64_t n, Op op) {
  const int64_t step = int64_t{blockDim.x} * kVec;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int64_t i = int64_t{threadIdx.x} * kVec; i < n; i += step) {
      op.template Apply<kVec>(r, i);
    }
  }
}

template <typename Op>
absl::Status LaunchRows(const char* name, int64_t rows, int64_t n, bool vec,
                        const Op& op, cudaStream_t stream) {
  if (rows == 0 || n == 0) return absl::OkStatus();
  const unsigned grid = GridBlocks(rows);
  if (vec) {
    RowKernel<4, Op><<<grid, RowThreads(n, 4), 0, stream>>>(rows, n, op);
  } else {
    RowKernel<1, Op><<<grid, RowThreads(n, 1), 0, stream>>>(rows, n, op);
  }
  return LaunchStatus(name);
}

// A grid-stride loop over n values: kVec at a time over the largest
// multiple of kVec, then one at a time over the tail.
template <int kVec, typename Op>
__global__ void FlatKernel(int64_t n, Op op) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const int64_t body = n / kVec * kVec;
  for (int64_t c = first; c * kVec < body; c += stride) {
    op.template Apply<kVec>(c * kVec);
  }
  if constexpr (kVec > 1) {
    for (int64_t i = body + first; i < n; i += stride) op.template Apply<1>(i);
  }
}

template <typename Op>
absl::Status LaunchFlat(const char* name, int64_t n, bool vec, const Op& op,
                        cudaStream_t stream) {
  RETURN_IF_ERROR(CheckSizes(name, {{"n", n}}));
  if (n == 0) return absl::OkStatus();
  if (vec) {
    FlatKernel<4, Op>
        <<<GridBlocks(CeilDiv(n, 4 * kFlatThreads)), kFlatThreads, 0, stream>>>(
            n, op);
  } else {
    FlatKernel<1, Op>
        <<<GridBlocks(CeilDiv(n, kFlatThreads)), kFlatThreads, 0, stream>>>(n,
                                                                            op);
  }
  return LaunchStatus(name);
}

// out = silu(gate) * up as cpu::SiluMul writes it: g / (1 + exp(-g)) * u.
struct SiluMulOp {
  const bf16* gate_up;
  int64_t inter;
  bf16* out;
  template <int kVec>
  __device__ void Apply(int64_t r, int64_t i) const {
    const bf16* row = gate_up + r * 2 * inter;
    const FloatVec<kVec> g = LoadB<kVec>(row + i);
    const FloatVec<kVec> u = LoadB<kVec>(row + inter + i);
    FloatVec<kVec> o;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      o.v[j] = g.v[j] / (1.0f + expf(-g.v[j])) * u.v[j];
    }
    StoreB<kVec>(out + r * inter + i, o);
  }
};

struct AddBiasOp {
  float* y;
  int64_t ld;
  const bf16* bias;
  template <int kVec>
  __device__ void Apply(int64_t r, int64_t i) const {
    FloatVec<kVec> v = LoadF<kVec>(y + r * ld + i);
    const FloatVec<kVec> b = LoadB<kVec>(bias + i);
#pragma unroll
    for (int j = 0; j < kVec; ++j) v.v[j] += b.v[j];
    StoreF<kVec>(y + r * ld + i, v);
  }
};

// y += g * x with g = cpu::Sigmoid(gate[t]) = 1 / (1 + exp(-gate[t])).
struct AddSigmoidGatedOp {
  float* y;
  const float* x;
  const float* gate;
  int64_t n;
  template <int kVec>
  __device__ void Apply(int64_t t, int64_t i) const {
    const float g = 1.0f / (1.0f + expf(-gate[t]));
    FloatVec<kVec> v = LoadF<kVec>(y + t * n + i);
    const FloatVec<kVec> s = LoadF<kVec>(x + t * n + i);
#pragma unroll
    for (int j = 0; j < kVec; ++j)
      v.v[j] = __fadd_rn(v.v[j], __fmul_rn(g, s.v[j]));
    StoreF<kVec>(y + t * n + i, v);
  }
};

struct EmbedOp {
  const bf16* table;
  const int32_t* ids;
  int64_t hidden;
  float* out;
  template <int kVec>
  __device__ void Apply(int64_t t, int64_t i) const {
    const int64_t id = ids[t];
    StoreF<kVec>(out + t * hidden + i, LoadB<kVec>(table + id * hidden + i));
  }
};

struct GatherRowsOp {
  const float* x;
  const int32_t* rows;
  int64_t n;
  bf16* out;
  template <int kVec>
  __device__ void Apply(int64_t r, int64_t i) const {
    const int64_t src = rows[r];
    StoreB<kVec>(out + r * n + i, LoadF<kVec>(x + src * n + i));
  }
};

// std::clamp(v, -limit, limit) exactly, NaN passing through as on the CPU.
struct ClampOp {
  float* x;
  float limit;
  template <int kVec>
  __device__ void Apply(int64_t i) const {
    FloatVec<kVec> v = LoadF<kVec>(x + i);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float e = v.v[j];
      v.v[j] = e < -limit ? -limit : (limit < e ? limit : e);
    }
    StoreF<kVec>(x + i, v);
  }
};

struct AddOp {
  float* y;
  const float* x;
  template <int kVec>
  __device__ void Apply(int64_t i) const {
    FloatVec<kVec> v = LoadF<kVec>(y + i);
    const FloatVec<kVec> a = LoadF<kVec>(x + i);
#pragma unroll
    for (int j = 0; j < kVec; ++j) v.v[j] += a.v[j];
    StoreF<kVec>(y + i, v);
  }
};

struct ToBf16Op {
  const float* src;
  bf16* dst;
  template <int kVec>
  __device__ void Apply(int64_t i) const {
    StoreB<kVec>(dst + i, LoadF<kVec>(src + i));
  }
};

struct FromBf16Op {
  const bf16* src;
  float* dst;
  template <int kVec>
  __device__ void Apply(int64_t i) const {
    StoreF<kVec>(dst + i, LoadB<kVec>(src + i));
  }
};

// One block per token. The token's k (row, weight) pairs are put in
// ascending row order in shared memory (rows are grouped by expert in
// ascending expert order, so this is the order in which the CPU executor
// adds the experts), then each output value is 0 + w0 * x0 + w1 * x1 + ...
// with the CPU's separate roundings of product and sum.
template <int kVec>
__global__ void CombineKernel(const float* expert_out, const int32_t* row,
                              const float* weight, int64_t tokens, int k,
                              int64_t hidden, float* out) {
  extern __shared__ int32_t combine_shared[];
  int32_t* sorted_row = combine_shared;
  float* sorted_weight = reinterpret_cast<float*>(combine_shared + k);
  const int64_t step = int64_t{blockDim.x} * kVec;
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const int32_t* rows_t = row + t * k;
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
      const int32_t rj = rows_t[j];
      int rank = 0;
      for (int i = 0; i < k; ++i) {
        const int32_t ri = rows_t[i];
        rank += (ri < rj || (ri == rj && i < j)) ? 1 : 0;
      }
      sorted_row[rank] = rj;
      sorted_weight[rank] = weight[t * k + j];
    }
    __syncthreads();
    for (int64_t i = int64_t{threadIdx.x} * kVec; i < hidden; i += step) {
      FloatVec<kVec> acc;
#pragma unroll
      for (int j = 0; j < kVec; ++j) acc.v[j] = 0.0f;
      for (int s = 0; s < k; ++s) {
        const float w = sorted_weight[s];
        const FloatVec<kVec> v =
            LoadF<kVec>(expert_out + int64_t{sorted_row[s]} * hidden + i);
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          acc.v[j] = __fadd_rn(acc.v[j], __fmul_rn(w, v.v[j]));
        }
      }
      StoreF<kVec>(out + t * hidden + i, acc);
    }
    __syncthreads();  // the shared pairs are rewritten for the next token
  }
}

}  // namespace

absl::Status RmsNorm(const float* x, int64_t rows, int64_t n, int64_t ld,
                     const bf16* weight, float eps, float* y,
                     cudaStream_t stream) {
  return LaunchRmsNorm("RmsNorm", x, rows, n, ld, weight, eps, y, ld, stream);
}

absl::Status RmsNormToBf16(const float* x, int64_t rows, int64_t n, int64_t ld,
                           const bf16* weight, float eps, bf16* y,
                           cudaStream_t stream) {
  return LaunchRmsNorm("RmsNormToBf16", x, rows, n, ld, weight, eps, y, n,
                       stream);
}

absl::Status ApplyRope(float* x, int64_t tokens, int64_t ld, int64_t heads,
                       int64_t head_dim, const int32_t* positions, double theta,
                       cudaStream_t stream) {
  constexpr char kName[] = "ApplyRope";
  RETURN_IF_ERROR(CheckSizes(
      kName, {{"tokens", tokens}, {"heads", heads}, {"head_dim", head_dim}}));
  const int64_t half = head_dim / 2;
  if (tokens == 0 || heads == 0 || half == 0) return absl::OkStatus();
  if (half > kMaxRopeHalf) {
    return absl::InvalidArgumentError(
        absl::StrCat(kName, ": head_dim = ", head_dim, " is above the ",
                     2 * kMaxRopeHalf + 1, " supported"));
  }
  RETURN_IF_ERROR(CheckStride(kName, ld, heads * head_dim));
  RopeFreqs freqs{};
  for (int64_t i = 0; i < half; ++i) {
    const float exponent =
        static_cast<float>(2 * i) / static_cast<float>(head_dim);
    freqs.inv_freq[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
  const int threads =
      static_cast<int>(std::min<int64_t>(RowThreads(heads * half, 1), 256));
  RopeKernel<<<GridBlocks(tokens), threads, 0, stream>>>(
      x, tokens, ld, heads, static_cast<int>(head_dim), positions, freqs);
  return LaunchStatus(kName);
}

absl::Status SiluMulToBf16(const bf16* gate_up, int64_t tokens, int64_t inter,
                           bf16* out, cudaStream_t stream) {
  constexpr char kName[] = "SiluMulToBf16";
  RETURN_IF_ERROR(CheckSizes(kName, {{"tokens", tokens}, {"inter", inter}}));
  return LaunchRows(kName, tokens, inter, Vec4({inter}, {}, {gate_up, out}),
                    SiluMulOp{gate_up, inter, out}, stream);
}

absl::Status AddBias(float* y, int64_t rows, int64_t n, int64_t ld,
                     const bf16* bias, cudaStream_t stream) {
  constexpr char kName[] = "AddBias";
  RETURN_IF_ERROR(CheckSizes(kName, {{"rows", rows}, {"n", n}}));
  RETURN_IF_ERROR(CheckStride(kName, ld, n));
  return LaunchRows(kName, rows, n, Vec4({n, ld}, {y}, {bias}),
                    AddBiasOp{y, ld, bias}, stream);
}

absl::Status Clamp(float* x, int64_t n, float limit, cudaStream_t stream) {
  return LaunchFlat("Clamp", n, Vec4({}, {x}, {}), ClampOp{x, limit}, stream);
}

absl::Status AddInPlace(float* y, const float* x, int64_t n,
                        cudaStream_t stream) {
  return LaunchFlat("AddInPlace", n, Vec4({}, {y, x}, {}), AddOp{y, x}, stream);
}

absl::Status AddSigmoidGated(float* y, const float* x, const float* gate,
                             int64_t tokens, int64_t n, cudaStream_t stream) {
  constexpr char kName[] = "AddSigmoidGated";
  RETURN_IF_ERROR(CheckSizes(kName, {{"tokens", tokens}, {"n", n}}));
  return LaunchRows(kName, tokens, n, Vec4({n}, {y, x}, {}),
                    AddSigmoidGatedOp{y, x, gate, n}, stream);
}

absl::Status ToBf16(const float* src, int64_t n, bf16* dst,
                    cudaStream_t stream) {
  return LaunchFlat("ToBf16", n, Vec4({}, {src}, {dst}), ToBf16Op{src, dst},
                    stream);
}

absl::Status FromBf16(const bf16* src, int64_t n, float* dst,
                      cudaStream_t stream) {
  return LaunchFlat("FromBf16", n, Vec4({}, {dst}, {src}), FromBf16Op{src, dst},
                    stream);
}

absl::Status Embed(const bf16* table, const int32_t* ids, int64_t tokens,
                   int64_t hidden, float* out, cudaStream_t stream) {
  constexpr char kName[] = "Embed";
  RETURN_IF_ERROR(CheckSizes(kName, {{"tokens", tokens}, {"hidden", hidden}}));
  return LaunchRows(kName, tokens, hidden, Vec4({hidden}, {out}, {table}),
                    EmbedOp{table, ids, hidden, out}, stream);
}

absl::Status GatherRowsToBf16(const float* x, const int32_t* rows,
                              int64_t count, int64_t n, bf16* out,
                              cudaStream_t stream) {
  constexpr char kName[] = "GatherRowsToBf16";
  RETURN_IF_ERROR(CheckSizes(kName, {{"count", count}, {"n", n}}));
  return LaunchRows(kName, count, n, Vec4({n}, {x}, {out}),
                    GatherRowsOp{x, rows, n, out}, stream);
}

absl::Status CombineExperts(const float* expert_out, const int32_t* row,
                            const float* weight, int64_t tokens, int k,
                            int64_t hidden, float* out, cudaStream_t stream) {
  constexpr char kName[] = "CombineExperts";
  RETURN_IF_ERROR(
      CheckSizes(kName, {{"tokens", tokens}, {"k", k}, {"hidden", hidden}}));
  if (k > kMaxCombineK) {
    return absl::InvalidArgumentError(
        absl::StrCat(kName, ": k = ", k, " exceeds ", kMaxCombineK));
  }
  if (tokens == 0 || hidden == 0) return absl::OkStatus();
  // k == 0 routes a token nowhere: its output is all zeros, as on the CPU.
  const size_t shared =
      static_cast<size_t>(k) * (sizeof(int32_t) + sizeof(float));
  const unsigned grid = GridBlocks(tokens);
  if (Vec4({hidden}, {expert_out, out}, {})) {
    CombineKernel<4><<<grid, RowThreads(hidden, 4), shared, stream>>>(
        expert_out, row, weight, tokens, k, hidden, out);
  } else {
    CombineKernel<1><<<grid, RowThreads(hidden, 1), shared, stream>>>(
        expert_out, row, weight, tokens, k, hidden, out);
  }
  return LaunchStatus(kName);
}

}  // namespace moe::cuda
