// Paged attention on the device (see paged_attention.h).
//
// Both attention kernels are built on one device routine, TileAttender: a
// thread block holds kRows query rows (query tokens x query heads that
// share one kv head) in shared memory and walks a range of key positions of
// one sequence in tiles of kTileKeys keys. Per tile it gathers the K and V
// rows through the block table into shared memory, computes the kRows x
// kTileKeys scores, and updates a float32 online softmax per row (running
// max m, running sum l, unnormalised output acc in registers).
//
// - Decode (one query per sequence): grid (token, head chunk, split). The
//   keys of a token are cut into partitions of P keys, one thread block per
//   partition (flash-decoding); each writes (m, l, acc) to scratch and a
//   reduce kernel combines the partitions. When one partition covers every
//   context the decode kernel writes the output itself and no scratch is
//   used.
// - Prefill: grid (tile of query tokens, head chunk). The query tokens of a
//   tile that belong to one sequence (a "run": normally the whole tile)
//   share each K/V tile; keys are masked per row (causal and window).
#include "core/cuda/paged_attention.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_status.h"

namespace moe::cuda {

absl::StatusOr<std::unique_ptr<DeviceKvStorage>> DeviceKvStorage::Create(
    const KvCacheShape& shape, int num_blocks) {
  if (shape.num_layers <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.block_size <= 0 || num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device KV storage needs a positive shape and block count, got ",
        shape.num_layers, " layers, ", shape.num_kv_heads,
        " kv heads, head_dim ", shape.head_dim, ", block_size ",
        shape.block_size, ", ", num_blocks, " blocks"));
  }
  const int64_t floats = int64_t{shape.num_layers} * num_blocks * 2 *
                         shape.block_size * shape.num_kv_heads * shape.head_dim;
  const int64_t bytes = floats * int64_t{sizeof(float)};
  auto storage =
      std::unique_ptr<DeviceKvStorage>(new DeviceKvStorage(shape, num_blocks));
  if (absl::Status status = storage->rows_.Reserve(floats); !status.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "device KV storage of ", bytes, " bytes (", num_blocks, " blocks of ",
        shape.BytesPerBlock(), " bytes) does not fit: ", status.message()));
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaMemset(storage->rows_.data(), 0, bytes));
  // The memset runs on the default stream; callers write on their own
  // (possibly non-blocking) streams, so finish it before handing it out.
  MOE_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return storage;
}

float* DeviceKvStorage::layer_data(int layer) {
  return rows_.data() + int64_t{layer} * num_blocks_ *
                            (block_bytes_per_layer() / int64_t{sizeof(float)});
}

const float* DeviceKvStorage::layer_data(int layer) const {
  return const_cast<DeviceKvStorage*>(this)->layer_data(layer);
}

int64_t DeviceKvStorage::block_bytes_per_layer() const {
  return 2 * int64_t{shape_.block_size} * shape_.num_kv_heads *
         shape_.head_dim * int64_t{sizeof(float)};
}

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// One key per lane in the score and softmax phases.
constexpr int kTileKeys = 32;
// Query rows of a prefill block (tokens x heads of one kv head).
constexpr int kPrefillRows = 16;
// Most query heads of one kv head that a decode block takes.
constexpr int kMaxDecodeRows = 8;
constexpr int kMaxHeadDim = 256;
// Decode partitions hold at least this many keys (four tiles), and there
// are at most kMaxSplits of them per token (bounds the scratch and grid.z).
constexpr int kMinPartitionKeys = 128;
constexpr int kMaxSplits = 1024;
// Decode blocks wanted per SM before a context is split.
constexpr int kDecodeBlocksPerSm = 4;
constexpr size_t kDefaultSmemLimit = 48 * 1024;

// Blocks per SM the attention kernels are register-budgeted for (the
// __launch_bounds__ minimum), at or below what their shared memory allows
// on an H100. Without it ptxas picks its own register target and spills
// in some instantiations (checked with -Xptxas -v for sm_80 and sm_90).
constexpr int DecodeMinBlocks(int max_d) {
  return max_d <= 64 ? 8 : max_d <= 128 ? 4 : 3;
}
constexpr int PrefillMinBlocks(int max_d) {
  return max_d <= 64 ? 6 : max_d <= 128 ? 5 : 3;
}

// One layer of DeviceKvStorage as the kernels see it: K row of (block b,
// slot s) at base + b * block_stride + s * row, V row block_size rows on.
struct KvLayer {
  const float* base;
  int block_size;
  int64_t row;           // num_kv_heads * head_dim floats
  int64_t block_stride;  // 2 * block_size * row floats
};

// What both attention kernels read.
struct AttentionArgs {
  const float* q;
  int64_t ldq;
  float* out;
  int64_t ldo;
  int64_t tokens;
  const int32_t* seq_of;
  const int32_t* pos_of;
  const int32_t* block_tables;
  const int32_t* table_start;
  KvLayer kv;
  int num_heads;
  int group;  // num_heads / num_kv_heads
  int head_dim;
  float scale;
  int window;  // 0: none
  // Query heads per block (divides group); prefill blocks take
  // kPrefillRows / heads_per_block tokens.
  int heads_per_block;
  // Decode only: keys per partition, partitions, and the scratch
  // [tokens][num_heads][splits] of m, l and [..][head_dim] of acc (unused
  // when splits == 1).
  int partition;
  int splits;
  float* part_m;
  float* part_l;
  float* part_acc;
};

__device__ __forceinline__ float WarpMax(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2)
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// First key position a query at `pos` attends to.
__device__ __forceinline__ int FirstKey(int pos, int window) {
  return window > 0 ? max(0, pos - window + 1) : 0;
}

// Shared-memory layout of a TileAttender and its size in bytes.
template <int kMaxD, int kRows>
struct TileLayout {
  static_assert(kMaxD % 32 == 0 && kMaxD <= kMaxHeadDim);
  static_assert(kRows >= 1 && (kRows & (kRows - 1)) == 0 && kRows <= 16);
  // Score phase: warps split the rows into kRowGroups groups and, when
  // there are fewer rows than warps, split head_dim kDSplits ways.
  static constexpr int kRowGroups = kRows < kWarps ? kRows : kWarps;
  static constexpr int kDSplits = kWarps / kRowGroups;
  static constexpr int kRowsPerGroup = kRows / kRowGroups;
  // Odd stride: lanes reading key `lane` at one dim hit distinct banks.
  static constexpr int kKStride = kMaxD + 1;
  static constexpr int kAccPerThread =
      (kRows * kMaxD + kThreads - 1) / kThreads;

  // Float offsets: q [kRows][kMaxD], k [kTileKeys][kKStride], v
  // [kTileKeys][kMaxD], s (scores, then probabilities) [kRows][kTileKeys],
  // part (score partials) [kDSplits][kRows][kTileKeys] when kDSplits > 1,
  // alpha, m, l [kRows].
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kRows * kMaxD;
  static constexpr int kV = kK + kTileKeys * kKStride;
  static constexpr int kS = kV + kTileKeys * kMaxD;
  static constexpr int kPart = kS + kRows * kTileKeys;
  static constexpr int kAlpha =
      kPart + (kDSplits > 1 ? kDSplits * kRows * kTileKeys : 0);
  static constexpr int kM = kAlpha + kRows;
  static constexpr int kL = kM + kRows;
  static constexpr int kFloats = kL + kRows;
  // Then ints: row_pos[kRows], row_start[kRows], tok_seq[kRows],
  // tok_pos[kRows].
  static constexpr int kInts = 4 * kRows;
  static constexpr size_t kBytes =
      size_t{kFloats} * sizeof(float) + size_t{kInts} * sizeof(int);
};

// The per-block attention state described at the top of the file. Row r
// attends to key positions [row_start[r], row_pos[r]] of the range given to
// Attend; a row with row_start > row_pos takes no key (other runs' rows).
template <int kMaxD, int kRows>
struct TileAttender {
  using L = TileLayout<kMaxD, kRows>;
  float* q;
  float* k;
  float* v;
  float* s;
  float* part;
  float* alpha;
  float* m;
  float* l;
  int* row_pos;
  int* row_start;
  int* tok_seq;
  int* tok_pos;
  float acc[L::kAccPerThread];

  __device__ __forceinline__ explicit TileAttender(float* smem) {
    q = smem + L::kQ;
    k = smem + L::kK;
    v = smem + L::kV;
    s = smem + L::kS;
    part = smem + L::kPart;
    alpha = smem + L::kAlpha;
    m = smem + L::kM;
    l = smem + L::kL;
    int* ints = reinterpret_cast<int*>(smem + L::kFloats);
    row_pos = ints;
    row_start = ints + kRows;
    tok_seq = ints + 2 * kRows;
    tok_pos = ints + 3 * kRows;
#pragma unroll
    for (int i = 0; i < L::kAccPerThread; ++i) acc[i] = 0.0f;
    if (threadIdx.x < kRows) {
      m[threadIdx.x] = -INFINITY;
      l[threadIdx.x] = 0.0f;
    }
  }

  // Row r's query (head_dim floats at `src`, or zeros when null).
  __device__ __forceinline__ void LoadQueryRow(int r, const float* src,
                                               int head_dim, int lane) {
#pragma unroll
    for (int c = 0; c < kMaxD / 32; ++c) {
      const int d = lane + 32 * c;
      if (d < head_dim) q[r * kMaxD + d] = src != nullptr ? src[d] : 0.0f;
    }
  }

  // Attends every row to the keys [lo, hi] of the sequence with block table
  // `table` (each row masked to its own [row_start, row_pos]). Ends with a
  // barrier, so the caller may rewrite the row bounds afterwards.
  __device__ __forceinline__ void Attend(const KvLayer& kv,
                                         const int32_t* __restrict__ table,
                                         int kv_head, int head_dim, float scale,
                                         int lo, int hi) {
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int64_t head_off = int64_t{kv_head} * head_dim;
    for (int tile = lo; tile <= hi; tile += kTileKeys) {
      // Gather: warp w copies keys w, w + kWarps, ... of the tile, lanes
      // along head_dim (coalesced). Keys past hi are zeroed so that the
      // masked products below stay finite.
#pragma unroll
      for (int i = 0; i < kTileKeys / kWarps; ++i) {
        const int j = warp + kWarps * i;
        const int kp = tile + j;
        float* kd = k + j * L::kKStride;
        float* vd = v + j * kMaxD;
        if (kp <= hi) {
          const int64_t block = table[kp / kv.block_size];
          const float* kr = kv.base + block * kv.block_stride +
                            int64_t{kp % kv.block_size} * kv.row + head_off;
          const float* vr = kr + int64_t{kv.block_size} * kv.row;
#pragma unroll
          for (int c = 0; c < kMaxD / 32; ++c) {
            const int d = lane + 32 * c;
            if (d < head_dim) {
              kd[d] = kr[d];
              vd[d] = vr[d];
            }
          }
        } else {
#pragma unroll
          for (int c = 0; c < kMaxD / 32; ++c) {
            const int d = lane + 32 * c;
            if (d < head_dim) {
              kd[d] = 0.0f;
              vd[d] = 0.0f;
            }
          }
        }
      }
      __syncthreads();

      // Scores: lane = key; warp = (row group, head_dim slice).
      {
        const int group = warp % L::kRowGroups;
        const int slice = warp / L::kRowGroups;
        const int per_slice = (head_dim + L::kDSplits - 1) / L::kDSplits;
        const int d0 = slice * per_slice;
        const int d1 = min(head_dim, d0 + per_slice);
        float dot[L::kRowsPerGroup];
#pragma unroll
        for (int i = 0; i < L::kRowsPerGroup; ++i) dot[i] = 0.0f;
        const float* kd = k + lane * L::kKStride;
        for (int d = d0; d < d1; ++d) {
          const float kx = kd[d];
#pragma unroll
          for (int i = 0; i < L::kRowsPerGroup; ++i) {
            dot[i] =
                fmaf(q[(group + L::kRowGroups * i) * kMaxD + d], kx, dot[i]);
          }
        }
#pragma unroll
        for (int i = 0; i < L::kRowsPerGroup; ++i) {
          const int r = group + L::kRowGroups * i;
          if constexpr (L::kDSplits == 1) {
            s[r * kTileKeys + lane] = dot[i];
          } else {
            part[(slice * kRows + r) * kTileKeys + lane] = dot[i];
          }
        }
      }
      if constexpr (L::kDSplits > 1) {
        __syncthreads();
        for (int e = threadIdx.x; e < kRows * kTileKeys; e += kThreads) {
          float sum = 0.0f;
#pragma unroll
          for (int slice = 0; slice < L::kDSplits; ++slice) {
            sum += part[slice * kRows * kTileKeys + e];
          }
          s[e] = sum;
        }
      }
      __syncthreads();

      // Online softmax: warp w owns rows w, w + kWarps, ...; lane = key.
      for (int r = warp; r < kRows; r += kWarps) {
        const int kp = tile + lane;
        const bool valid = kp <= hi && kp >= row_start[r] && kp <= row_pos[r];
        const float x = valid ? s[r * kTileKeys + lane] * scale : -INFINITY;
        const float m_old = m[r];
        const float m_new = fmaxf(m_old, WarpMax(x));
        float p = 0.0f;
        float a = 1.0f;
        if (m_new != -INFINITY) {  // uniform across the warp
          p = valid ? expf(x - m_new) : 0.0f;
          a = expf(m_old - m_new);  // 0 for the first keys of a row
        }
        const float sum = WarpSum(p);
        s[r * kTileKeys + lane] = p;
        if (lane == 0) {
          m[r] = m_new;
          l[r] = l[r] * a + sum;
          alpha[r] = a;
        }
      }
      __syncthreads();

      // acc = acc * alpha + P · V; thread owns (row, dim) pairs tid +
      // kThreads * i (all lanes of a warp on one row: P reads broadcast).
#pragma unroll
      for (int i = 0; i < L::kAccPerThread; ++i) {
        const int e = threadIdx.x + kThreads * i;
        const int r = e / kMaxD;
        const int d = e % kMaxD;
        if ((kRows * kMaxD % kThreads == 0 || e < kRows * kMaxD) &&
            d < head_dim) {
          float sum = 0.0f;
#pragma unroll
          for (int j = 0; j < kTileKeys; ++j) {
            sum = fmaf(s[r * kTileKeys + j], v[j * kMaxD + d], sum);
          }
          acc[i] = fmaf(acc[i], alpha[r], sum);
        }
      }
      __syncthreads();
    }
  }

  // Calls fn(i, r, d) for every accumulator this thread owns (d < head_dim).
  template <typename Fn>
  __device__ __forceinline__ void ForEachAcc(int head_dim, Fn fn) const {
#pragma unroll
    for (int i = 0; i < L::kAccPerThread; ++i) {
      const int e = threadIdx.x + kThreads * i;
      const int r = e / kMaxD;
      const int d = e % kMaxD;
      if ((kRows * kMaxD % kThreads == 0 || e < kRows * kMaxD) &&
          d < head_dim) {
        fn(i, r, d);
      }
    }
  }
};

// Decode: block (token, head chunk, split) over partition `split` of the
// token's keys; rows are kRows consecutive query heads of one kv head.
template <int kMaxD, int kRows>
__global__ void __launch_bounds__(kThreads, DecodeMinBlocks(kMaxD))
    DecodeAttentionKernel(AttentionArgs a) {
  extern __shared__ float smem[];
  const int64_t t = blockIdx.x;
  const int split = blockIdx.z;
  const int pos = a.pos_of[t];
  const int first = FirstKey(pos, a.window);
  const int lo = first + split * a.partition;
  if (lo > pos) return;  // this token's context is shorter (whole block)
  // The last partition takes whatever is left, so a pos_of above
  // batch.max_pos still sees all its keys.
  const int hi = split == a.splits - 1 ? pos : min(pos, lo + a.partition - 1);

  const int chunks_per_kv = a.group / kRows;
  const int kv_head = blockIdx.y / chunks_per_kv;
  const int head0 = kv_head * a.group + (blockIdx.y % chunks_per_kv) * kRows;

  TileAttender<kMaxD, kRows> att(smem);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int r = warp; r < kRows; r += kWarps) {
    att.LoadQueryRow(r, a.q + t * a.ldq + int64_t{head0 + r} * a.head_dim,
                     a.head_dim, lane);
  }
  if (threadIdx.x < kRows) {
    att.row_pos[threadIdx.x] = pos;
    att.row_start[threadIdx.x] = first;
  }
  __syncthreads();
  const int32_t* table = a.block_tables + a.table_start[a.seq_of[t]];
  att.Attend(a.kv, table, kv_head, a.head_dim, a.scale, lo, hi);

  if (a.splits == 1) {
    att.ForEachAcc(a.head_dim, [&](int i, int r, int d) {
      a.out[t * a.ldo + int64_t{head0 + r} * a.head_dim + d] =
          att.acc[i] / att.l[r];
    });
    return;
  }
  att.ForEachAcc(a.head_dim, [&](int i, int r, int d) {
    const int64_t part = (t * a.num_heads + head0 + r) * a.splits + split;
    a.part_acc[part * a.head_dim + d] = att.acc[i];
  });
  if (threadIdx.x < kRows) {
    const int64_t part =
        (t * a.num_heads + head0 + threadIdx.x) * a.splits + split;
    a.part_m[part] = att.m[threadIdx.x];
    a.part_l[part] = att.l[threadIdx.x];
  }
}

// Combines the decode partitions of (token blockIdx.x, head blockIdx.y):
// out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M), M = max_s m_s.
__global__ void __launch_bounds__(kThreads)
    DecodeReduceKernel(AttentionArgs a) {
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const int pos = a.pos_of[t];
  const int keys = pos - FirstKey(pos, a.window) + 1;
  const int used = min(a.splits, (keys + a.partition - 1) / a.partition);
  const int64_t base = (t * a.num_heads + h) * a.splits;
  float max_m = -INFINITY;
  for (int s = 0; s < used; ++s) max_m = fmaxf(max_m, a.part_m[base + s]);
  float sum = 0.0f;
  for (int s = 0; s < used; ++s) {
    sum += a.part_l[base + s] * expf(a.part_m[base + s] - max_m);
  }
  const float inv = 1.0f / sum;
  for (int d = threadIdx.x; d < a.head_dim; d += kThreads) {
    float o = 0.0f;
    for (int s = 0; s < used; ++s) {
      o = fmaf(a.part_acc[(base + s) * a.head_dim + d],
               expf(a.part_m[base + s] - max_m), o);
    }
    a.out[t * a.ldo + int64_t{h} * a.head_dim + d] = o * inv;
  }
}

// Prefill: block (tile of kPrefillRows / heads_per_block consecutive batch
// tokens, head chunk). Row r is token r / heads_per_block of the tile and
// query head head0 + r % heads_per_block.
template <int kMaxD>
__global__ void __launch_bounds__(kThreads, PrefillMinBlocks(kMaxD))
    PrefillAttentionKernel(AttentionArgs a) {
  constexpr int kRows = kPrefillRows;
  extern __shared__ float smem[];
  const int hpb = a.heads_per_block;
  const int tile_tokens = kRows / hpb;
  const int64_t t0 = int64_t{blockIdx.x} * tile_tokens;
  const int n = static_cast<int>(min(int64_t{tile_tokens}, a.tokens - t0));
  const int chunks_per_kv = a.group / hpb;
  const int kv_head = blockIdx.y / chunks_per_kv;
  const int head0 = kv_head * a.group + (blockIdx.y % chunks_per_kv) * hpb;

  TileAttender<kMaxD, kRows> att(smem);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int r = warp; r < kRows; r += kWarps) {
    const int i = r / hpb;
    att.LoadQueryRow(
        r,
        i < n ? a.q + (t0 + i) * a.ldq + int64_t{head0 + r % hpb} * a.head_dim
              : nullptr,
        a.head_dim, lane);
  }
  if (threadIdx.x < n) {
    att.tok_seq[threadIdx.x] = a.seq_of[t0 + threadIdx.x];
    att.tok_pos[threadIdx.x] = a.pos_of[t0 + threadIdx.x];
  }
  __syncthreads();

  // Runs of consecutive tokens of one sequence share the K/V tiles; every
  // thread walks the same runs (tok_seq is in shared memory).
  for (int run = 0; run < n;) {
    const int seq = att.tok_seq[run];
    int end = run + 1;
    while (end < n && att.tok_seq[end] == seq) ++end;
    int lo = INT_MAX;
    int hi = -1;
    for (int i = run; i < end; ++i) {
      lo = min(lo, FirstKey(att.tok_pos[i], a.window));
      hi = max(hi, att.tok_pos[i]);
    }
    if (threadIdx.x < kRows) {
      const int i = threadIdx.x / hpb;
      const bool in_run = i >= run && i < end;
      att.row_pos[threadIdx.x] = in_run ? att.tok_pos[i] : -1;
      att.row_start[threadIdx.x] =
          in_run ? FirstKey(att.tok_pos[i], a.window) : INT_MAX;
    }
    __syncthreads();
    att.Attend(a.kv, a.block_tables + a.table_start[seq], kv_head, a.head_dim,
               a.scale, lo, hi);
    run = end;
  }

  att.ForEachAcc(a.head_dim, [&](int i, int r, int d) {
    const int tok = r / hpb;
    if (tok < n) {
      a.out[(t0 + tok) * a.ldo + int64_t{head0 + r % hpb} * a.head_dim + d] =
          att.acc[i] / att.l[r];
    }
  });
}

// One token row per block: K and V rows to (slot_of[t] / block_size,
// slot_of[t] % block_size). A slot outside the storage is skipped (the
// host cannot check device-side slots; this keeps a bad one from writing
// out of bounds).
template <bool kVec4>
__global__ void __launch_bounds__(kThreads)
    WriteKvKernel(float* layer, KvLayer kv, int num_blocks,
                  const float* __restrict__ k, const float* __restrict__ v,
                  int64_t ld, const int32_t* __restrict__ slot_of) {
  const int64_t t = blockIdx.x;
  const int32_t slot = slot_of[t];
  if (slot < 0 || slot / kv.block_size >= num_blocks) return;
  float* kd = layer + int64_t{slot / kv.block_size} * kv.block_stride +
              int64_t{slot % kv.block_size} * kv.row;
  float* vd = kd + int64_t{kv.block_size} * kv.row;
  const float* ks = k + t * ld;
  const float* vs = v + t * ld;
  // WriteKv checked that kv.row fits an int.
  const int row = static_cast<int>(kv.row);
  if constexpr (kVec4) {
#pragma unroll 2
    for (int c = threadIdx.x; c < row / 4; c += kThreads) {
      reinterpret_cast<float4*>(kd)[c] = reinterpret_cast<const float4*>(ks)[c];
      reinterpret_cast<float4*>(vd)[c] = reinterpret_cast<const float4*>(vs)[c];
    }
  } else {
#pragma unroll 2
    for (int c = threadIdx.x; c < row; c += kThreads) {
      kd[c] = ks[c];
      vd[c] = vs[c];
    }
  }
}

KvLayer LayerView(const DeviceKvStorage& storage, int layer) {
  const KvCacheShape& shape = storage.shape();
  const int64_t row = int64_t{shape.num_kv_heads} * shape.head_dim;
  return KvLayer{storage.layer_data(layer), shape.block_size, row,
                 2 * shape.block_size * row};
}

// Largest power of two <= limit that divides n.
int PowerOfTwoDivisor(int n, int limit) {
  int p = 1;
  while (p * 2 <= limit && n % (p * 2) == 0) p *= 2;
  return p;
}

// Enqueues `kernel` with `smem` bytes of dynamic shared memory, opting in
// above the default 48 KiB (per call: the attribute is per device).
template <typename Kernel>
absl::Status Launch(Kernel kernel, const char* name, dim3 grid, size_t smem,
                    cudaStream_t stream, const AttentionArgs& args) {
  if (smem > kDefaultSmemLimit) {
    MOE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(smem)));
  }
  kernel<<<grid, kThreads, smem, stream>>>(args);
  return LaunchStatus(name);
}

template <int kMaxD>
absl::Status LaunchDecode(int rows, dim3 grid, cudaStream_t stream,
                          const AttentionArgs& args) {
  switch (rows) {
    case 1:
      return Launch(DecodeAttentionKernel<kMaxD, 1>, "DecodeAttentionKernel",
                    grid, TileLayout<kMaxD, 1>::kBytes, stream, args);
    case 2:
      return Launch(DecodeAttentionKernel<kMaxD, 2>, "DecodeAttentionKernel",
                    grid, TileLayout<kMaxD, 2>::kBytes, stream, args);
    case 4:
      return Launch(DecodeAttentionKernel<kMaxD, 4>, "DecodeAttentionKernel",
                    grid, TileLayout<kMaxD, 4>::kBytes, stream, args);
    default:
      static_assert(kMaxDecodeRows == 8);
      return Launch(DecodeAttentionKernel<kMaxD, 8>, "DecodeAttentionKernel",
                    grid, TileLayout<kMaxD, 8>::kBytes, stream, args);
  }
}

template <int kMaxD>
absl::Status LaunchPrefill(dim3 grid, cudaStream_t stream,
                           const AttentionArgs& args) {
  return Launch(PrefillAttentionKernel<kMaxD>, "PrefillAttentionKernel", grid,
                TileLayout<kMaxD, kPrefillRows>::kBytes, stream, args);
}

absl::Status ValidateAttention(const AttentionBatch& batch,
                               const AttentionParams& p,
                               const KvCacheShape& shape) {
  if (p.num_heads <= 0 || p.num_kv_heads <= 0 ||
      p.num_heads % p.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention needs num_kv_heads (", p.num_kv_heads,
        ") to be positive and divide num_heads (", p.num_heads, ")"));
  }
  if (p.num_heads > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention supports at most 65535 heads, got ", p.num_heads));
  }
  if (p.head_dim <= 0 || p.head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA attention supports head_dim 1..", kMaxHeadDim,
                     ", got ", p.head_dim));
  }
  if (p.num_kv_heads != shape.num_kv_heads || p.head_dim != shape.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention params (", p.num_kv_heads, " kv heads, head_dim ",
        p.head_dim, ") do not match the KV storage (", shape.num_kv_heads,
        " kv heads, head_dim ", shape.head_dim, ")"));
  }
  if (p.layer < 0 || p.layer >= shape.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention layer ", p.layer, " is outside the KV storage's ",
        shape.num_layers, " layers"));
  }
  if (p.sliding_window < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sliding_window must be >= 0, got ", p.sliding_window));
  }
  if (batch.tokens < 0 || batch.tokens > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention batch of ", batch.tokens, " tokens"));
  }
  if (batch.tokens == 0) return absl::OkStatus();
  const int64_t width = int64_t{p.num_heads} * p.head_dim;
  if (batch.ldq < width || batch.ldo < width) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention row strides ldq ", batch.ldq, " / ldo ",
                     batch.ldo, " are below num_heads * head_dim = ", width));
  }
  if (batch.max_pos < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention max_pos must be >= 0, got ", batch.max_pos));
  }
  if (batch.q == nullptr || batch.out == nullptr || batch.seq_of == nullptr ||
      batch.pos_of == nullptr || batch.block_tables == nullptr ||
      batch.table_start == nullptr) {
    return absl::InvalidArgumentError(
        "attention batch has a null device array");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteKv(DeviceKvStorage& storage, int layer, const float* k,
                     const float* v, int64_t ld, const int32_t* slot_of,
                     int64_t tokens, cudaStream_t stream) {
  const KvCacheShape& shape = storage.shape();
  if (layer < 0 || layer >= shape.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKv layer ", layer, " is outside the KV storage's ",
                     shape.num_layers, " layers"));
  }
  const int64_t row = int64_t{shape.num_kv_heads} * shape.head_dim;
  if (tokens < 0 || tokens > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKv of ", tokens, " tokens"));
  }
  if (tokens == 0) return absl::OkStatus();
  if (row > INT_MAX / 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKv rows of ", row, " floats are too wide"));
  }
  if (ld < row) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteKv row stride ", ld, " is below kv_dim ", row));
  }
  if (k == nullptr || v == nullptr || slot_of == nullptr) {
    return absl::InvalidArgumentError("WriteKv has a null device array");
  }
  const KvLayer kv = LayerView(storage, layer);
  float* dst = storage.layer_data(layer);
  const auto aligned = [](const void* ptr) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
  };
  const dim3 grid(static_cast<unsigned>(tokens));
  if (row % 4 == 0 && ld % 4 == 0 && aligned(k) && aligned(v) && aligned(dst)) {
    WriteKvKernel<true><<<grid, kThreads, 0, stream>>>(
        dst, kv, storage.num_blocks(), k, v, ld, slot_of);
  } else {
    WriteKvKernel<false><<<grid, kThreads, 0, stream>>>(
        dst, kv, storage.num_blocks(), k, v, ld, slot_of);
  }
  return LaunchStatus("WriteKvKernel");
}

absl::Status PagedAttention(const AttentionBatch& batch,
                            const AttentionParams& params,
                            const DeviceKvStorage& storage,
                            cudaStream_t stream) {
  if (absl::Status status = ValidateAttention(batch, params, storage.shape());
      !status.ok()) {
    return status;
  }
  if (batch.tokens == 0) return absl::OkStatus();

  AttentionArgs args{};
  args.q = batch.q;
  args.ldq = batch.ldq;
  args.out = batch.out;
  args.ldo = batch.ldo;
  args.tokens = batch.tokens;
  args.seq_of = batch.seq_of;
  args.pos_of = batch.pos_of;
  args.block_tables = batch.block_tables;
  args.table_start = batch.table_start;
  args.kv = LayerView(storage, params.layer);
  args.num_heads = params.num_heads;
  args.group = params.num_heads / params.num_kv_heads;
  args.head_dim = params.head_dim;
  args.scale = params.scale;
  args.window = params.sliding_window;
  args.partition = 0;
  args.splits = 1;
  const int max_d = params.head_dim <= 64    ? 64
                    : params.head_dim <= 128 ? 128
                                             : 256;

  if (!batch.decode_only) {
    args.heads_per_block = PowerOfTwoDivisor(args.group, kPrefillRows);
    const int tile_tokens = kPrefillRows / args.heads_per_block;
    const dim3 grid(
        static_cast<unsigned>((batch.tokens + tile_tokens - 1) / tile_tokens),
        static_cast<unsigned>(params.num_heads / args.heads_per_block));
    switch (max_d) {
      case 64:
        return LaunchPrefill<64>(grid, stream, args);
      case 128:
        return LaunchPrefill<128>(grid, stream, args);
      default:
        return LaunchPrefill<256>(grid, stream, args);
    }
  }

  // Decode: split the longest context into partitions until the grid has
  // about kDecodeBlocksPerSm blocks per SM, each partition at least
  // kMinPartitionKeys keys.
  args.heads_per_block = PowerOfTwoDivisor(args.group, kMaxDecodeRows);
  const int64_t head_chunks = params.num_heads / args.heads_per_block;
  int64_t span = int64_t{batch.max_pos} + 1;
  if (params.sliding_window > 0) {
    span = std::min<int64_t>(span, params.sliding_window);
  }
  int device = 0;
  int sms = 0;
  MOE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  MOE_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t base_blocks = batch.tokens * head_chunks;
  const int64_t wanted = int64_t{kDecodeBlocksPerSm} * sms;
  int64_t splits = (wanted + base_blocks - 1) / base_blocks;
  splits = std::min(splits, (span + kMinPartitionKeys - 1) / kMinPartitionKeys);
  splits = std::clamp<int64_t>(splits, 1, kMaxSplits);
  int64_t partition = (span + splits - 1) / splits;
  partition = (partition + kTileKeys - 1) / kTileKeys * kTileKeys;
  splits = (span + partition - 1) / partition;
  args.partition = static_cast<int>(partition);
  args.splits = static_cast<int>(splits);
  const dim3 grid(static_cast<unsigned>(batch.tokens),
                  static_cast<unsigned>(head_chunks),
                  static_cast<unsigned>(splits));
  const auto launch_decode = [&]() {
    switch (max_d) {
      case 64:
        return LaunchDecode<64>(args.heads_per_block, grid, stream, args);
      case 128:
        return LaunchDecode<128>(args.heads_per_block, grid, stream, args);
      default:
        return LaunchDecode<256>(args.heads_per_block, grid, stream, args);
    }
  };
  if (splits == 1) return launch_decode();

  // Scratch for the partitions: acc [parts][head_dim], then m and l
  // [parts], stream-ordered so that it needs no state between calls.
  const int64_t parts = batch.tokens * params.num_heads * splits;
  const int64_t scratch_bytes =
      parts * (params.head_dim + 2) * int64_t{sizeof(float)};
  void* scratch = nullptr;
  if (const cudaError_t error =
          cudaMallocAsync(&scratch, scratch_bytes, stream);
      error != cudaSuccess) {
    cudaGetLastError();  // clear it: the next launch must not report it
    return absl::ResourceExhaustedError(
        absl::StrCat("cudaMallocAsync of ", scratch_bytes,
                     " bytes of decode attention scratch failed: ",
                     cudaGetErrorString(error)));
  }
  args.part_acc = static_cast<float*>(scratch);
  args.part_m = args.part_acc + parts * params.head_dim;
  args.part_l = args.part_m + parts;
  const absl::Status status = [&]() -> absl::Status {
    if (absl::Status launched = launch_decode(); !launched.ok()) {
      return launched;
    }
    DecodeReduceKernel<<<dim3(static_cast<unsigned>(batch.tokens),
                              static_cast<unsigned>(params.num_heads)),
                         kThreads, 0, stream>>>(args);
    return LaunchStatus("DecodeReduceKernel");
  }();
  const absl::Status freed =
      CudaStatus(cudaFreeAsync(scratch, stream), "cudaFreeAsync");
  return status.ok() ? freed : status;
}

}  // namespace moe::cuda
