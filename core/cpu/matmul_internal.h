// Tile-level matmul entry points shared by the dispatcher (matmul.cc) and the
// ISA-specific implementations. Not part of the public kernel API.
#ifndef MOE_CORE_CPU_MATMUL_INTERNAL_H_
#define MOE_CORE_CPU_MATMUL_INTERNAL_H_

#include <cstdint>

#include "core/cpu/kernels.h"

namespace moe::cpu::internal {

// Computes output columns [n_begin, n_end) of `job` for all of its rows.
void MatMulTileAvx512(const MatMulJob& job, int64_t n_begin, int64_t n_end);
void MatMulTilePortable(const MatMulJob& job, int64_t n_begin, int64_t n_end);

}  // namespace moe::cpu::internal

#endif  // MOE_CORE_CPU_MATMUL_INTERNAL_H_
