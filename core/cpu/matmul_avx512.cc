// AVX-512 matmul tiles. Compiled with -mavx512f/bw/vl and only called when
// the CPU supports them (see matmul.cc).
//
// Layout: y[m, n] = x[m, k] · w[n, k]^T. The microkernel keeps MR x NR
// 16-lane accumulators (MR <= 4 rows of x, NR <= 8 weight rows), vectorised
// along k, and widens BF16/F16 weights to float32 in registers, so weights
// are read once per MR rows of x and never expanded in memory. Decode (m small) is bound by reading w; prefill reuses
// each weight tile (kept in L1/L2) across all rows of x.
#include <immintrin.h>

#include "core/cpu/matmul_internal.h"

namespace moe::cpu::internal {
namespace {

template <DType kType>
inline __m512 LoadW(const void* base, int64_t i) {
  if constexpr (kType == DType::kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(base) + i);
  } else if constexpr (kType == DType::kBF16) {
    const __m256i raw = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  } else {
    const __m256i raw = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + i));
    return _mm512_cvtph_ps(raw);
  }
}

template <DType kType>
inline __m512 LoadWMasked(const void* base, int64_t i, __mmask16 mask) {
  if constexpr (kType == DType::kF32) {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(base) + i);
  } else if constexpr (kType == DType::kBF16) {
    const __m256i raw =
        _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(base) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  } else {
    const __m256i raw =
        _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(base) + i);
    return _mm512_cvtph_ps(raw);
  }
}

// Horizontal sums of four vectors: {sum(a), sum(b), sum(c), sum(d)}.
inline __m128 ReduceFour(__m512 a, __m512 b, __m512 c, __m512 d) {
  auto halve = [](__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  };
  const __m256 ab = _mm256_hadd_ps(halve(a), halve(b));
  const __m256 cd = _mm256_hadd_ps(halve(c), halve(d));
  const __m256 abcd = _mm256_hadd_ps(ab, cd);
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// y[r, c] for r < MR, c < NR over the full k.
template <DType kType, int MR, int NR>
inline void MicroKernel(const float* x, int64_t ldx, const char* w,
                        int64_t w_row_bytes, int64_t k, float* y,
                        int64_t ldy) {
  __m512 acc[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    // x rows first, then one weight row at a time: MR*NR accumulators plus
    // MR + 1 operands stay within the 32 vector registers.
    __m512 xv[MR];
    for (int r = 0; r < MR; ++r) xv[r] = _mm512_loadu_ps(x + r * ldx + i);
    for (int c = 0; c < NR; ++c) {
      const __m512 wv = LoadW<kType>(w + c * w_row_bytes, i);
      for (int r = 0; r < MR; ++r) {
        acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
      }
    }
  }
  if (i < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - i)) - 1);
    __m512 xv[MR];
    for (int r = 0; r < MR; ++r) {
      xv[r] = _mm512_maskz_loadu_ps(mask, x + r * ldx + i);
    }
    for (int c = 0; c < NR; ++c) {
      const __m512 wv = LoadWMasked<kType>(w + c * w_row_bytes, i, mask);
      for (int r = 0; r < MR; ++r) {
        acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    int c = 0;
    for (; c + 4 <= NR; c += 4) {
      _mm_storeu_ps(y + r * ldy + c, ReduceFour(acc[r][c], acc[r][c + 1],
                                               acc[r][c + 2], acc[r][c + 3]));
    }
    // Same summation order as ReduceFour, so an output does not depend on
    // which tile width (and so which thread partition) computed it.
    for (; c < NR; ++c) {
      y[r * ldy + c] = _mm_cvtss_f32(
          ReduceFour(acc[r][c], acc[r][c], acc[r][c], acc[r][c]));
    }
  }
}

// Weight rows per microkernel call for MR rows of x: as many as the register
// file allows, since more rows in flight read memory faster.
template <int MR>
constexpr int WideNR() {
  return MR == 4 ? 6 : 8;
}

template <DType kType, int MR>
inline void RowsKernel(const float* x, int64_t ldx, const char* w,
                       int64_t w_row_bytes, int64_t k, float* y, int64_t ldy,
                       int64_t n_begin, int64_t n_end) {
  constexpr int kWide = WideNR<MR>();
  int64_t n = n_begin;
  for (; n + kWide <= n_end; n += kWide) {
    MicroKernel<kType, MR, kWide>(x, ldx, w + n * w_row_bytes, w_row_bytes, k,
                                  y + n, ldy);
  }
  for (; n + 4 <= n_end; n += 4) {
    MicroKernel<kType, MR, 4>(x, ldx, w + n * w_row_bytes, w_row_bytes, k,
                              y + n, ldy);
  }
  for (; n < n_end; ++n) {
    MicroKernel<kType, MR, 1>(x, ldx, w + n * w_row_bytes, w_row_bytes, k,
                              y + n, ldy);
  }
}

template <DType kType>
void Tile(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  const TensorView& w = *job.w;
  const int64_t k = w.cols();
  const char* wb = static_cast<const char*>(w.data);
  const int64_t w_row_bytes = k * static_cast<int64_t>(DTypeSize(kType));
  // Weight sub-tiles of 16 rows stay in L1 while every row of x passes.
  constexpr int64_t kRowsPerPass = 24;
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kRowsPerPass) {
    const int64_t n1 = n0 + kRowsPerPass < n_end ? n0 + kRowsPerPass : n_end;
    int64_t r = 0;
    for (; r + 4 <= job.m; r += 4) {
      RowsKernel<kType, 4>(job.x + r * job.ldx, job.ldx, wb, w_row_bytes, k,
                           job.y + r * job.ldy, job.ldy, n0, n1);
    }
    switch (job.m - r) {
      case 3:
        RowsKernel<kType, 3>(job.x + r * job.ldx, job.ldx, wb, w_row_bytes, k,
                             job.y + r * job.ldy, job.ldy, n0, n1);
        break;
      case 2:
        RowsKernel<kType, 2>(job.x + r * job.ldx, job.ldx, wb, w_row_bytes, k,
                             job.y + r * job.ldy, job.ldy, n0, n1);
        break;
      case 1:
        RowsKernel<kType, 1>(job.x + r * job.ldx, job.ldx, wb, w_row_bytes, k,
                             job.y + r * job.ldy, job.ldy, n0, n1);
        break;
      default:
        break;
    }
  }
}

}  // namespace

void MatMulTileAvx512(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  switch (job.w->dtype) {
    case DType::kBF16:
      Tile<DType::kBF16>(job, n_begin, n_end);
      return;
    case DType::kF16:
      Tile<DType::kF16>(job, n_begin, n_end);
      return;
    case DType::kF32:
      Tile<DType::kF32>(job, n_begin, n_end);
      return;
  }
}

}  // namespace moe::cpu::internal
