#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/cpu/kernels.h"
#include "core/cpu/matmul_internal.h"

namespace moe::cpu {
namespace {

bool CpuSupportsAvx512() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

bool Avx512WantedAtStart() {
  const char* env = std::getenv("MOE_DISABLE_AVX512");
  if (env != nullptr && std::strcmp(env, "0") != 0 && env[0] != '\0') {
    return false;
  }
  return CpuSupportsAvx512();
}

std::atomic<bool> g_use_avx512{Avx512WantedAtStart()};

// Output columns per work unit: small enough to balance two or more threads,
// large enough that a unit's weights stream sequentially.
constexpr int64_t kUnitRows = 16;

}  // namespace

bool HasAvx512MatMul() { return g_use_avx512.load(std::memory_order_relaxed); }

void SetAvx512MatMulEnabled(bool enabled) {
  g_use_avx512.store(enabled && CpuSupportsAvx512(), std::memory_order_relaxed);
}

namespace internal {

void MatMulTilePortable(const MatMulJob& job, int64_t n_begin, int64_t n_end) {
  const TensorView& w = *job.w;
  const int64_t k = w.cols();
  std::vector<float> row(k);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const void* wr = w.Row(n);
    for (int64_t i = 0; i < k; ++i) row[i] = LoadAsFloat(wr, w.dtype, i);
    for (int64_t r = 0; r < job.m; ++r) {
      const float* x = job.x + r * job.ldx;
      // Eight partial sums: vectorisable without reassociation flags.
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = 0;
      for (; i + 8 <= k; i += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * row[i + j];
      }
      float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                  ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      for (; i < k; ++i) sum += x[i] * row[i];
      job.y[r * job.ldy + n] = sum;
    }
  }
}

}  // namespace internal

void MatMul(absl::Span<const MatMulJob> jobs, ThreadPool* pool) {
  // Work units are (job, block of kUnitRows output columns); unit_start[j] is
  // the first unit of job j.
  std::vector<int64_t> unit_start(jobs.size() + 1, 0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    const int64_t n = jobs[j].m > 0 ? jobs[j].w->rows() : 0;
    unit_start[j + 1] = unit_start[j] + (n + kUnitRows - 1) / kUnitRows;
  }
  const int64_t units = unit_start.back();
  if (units == 0) return;
  const bool avx512 = HasAvx512MatMul();
  auto run = [&](int64_t begin, int64_t end) {
    size_t j = 0;
    while (unit_start[j + 1] <= begin) ++j;
    for (int64_t u = begin; u < end;) {
      while (unit_start[j + 1] <= u) ++j;
      const MatMulJob& job = jobs[j];
      const int64_t last = std::min(end, unit_start[j + 1]);
      const int64_t n0 = (u - unit_start[j]) * kUnitRows;
      const int64_t n1 = std::min(job.w->rows(), (last - unit_start[j]) * kUnitRows);
      if (avx512) {
        internal::MatMulTileAvx512(job, n0, n1);
      } else {
        internal::MatMulTilePortable(job, n0, n1);
      }
      u = last;
    }
  };
  if (pool == nullptr) {
    run(0, units);
  } else {
    pool->ParallelFor(units, 1, run);
  }
}

void MatMul(const float* x, int64_t m, const TensorView& w, float* y,
            ThreadPool* pool) {
  const MatMulJob job{x, m, w.cols(), &w, y, w.rows()};
  MatMul(absl::MakeConstSpan(&job, 1), pool);
}

void MatMulReference(const MatMulJob& job) {
  const TensorView& w = *job.w;
  const int64_t k = w.cols();
  for (int64_t r = 0; r < job.m; ++r) {
    for (int64_t n = 0; n < w.rows(); ++n) {
      double sum = 0;
      const void* wr = w.Row(n);
      for (int64_t i = 0; i < k; ++i) {
        sum += double{job.x[r * job.ldx + i]} * LoadAsFloat(wr, w.dtype, i);
      }
      job.y[r * job.ldy + n] = static_cast<float>(sum);
    }
  }
}

}  // namespace moe::cpu
