// Top-k expert gating, greedy argmax and token sampling of
// core/cuda/kernels.h, matching core/gating.cc RouteFromLogits and
// core/sampling.cc ArgMax / Sampler::Sample.
//
// TopKGating: one warp per token. The warp holds the token's <= 1024
// logits in registers (32 per lane, lane-strided so that a lane's values
// are in ascending expert order), computes the float32 softmax as
// cpu::Softmax does (float exp, double sum, float reciprocal), then picks
// the k largest by k rounds of a warp-wide arg-max (ties: lower id).
//
// SampleRows: Sampler::Sample needs the row in descending-logit order
// (ties: lower id first) for top-k, top-p and the inverse CDF. Each element
// becomes one 64-bit key, row | descending logit | id, and one device-wide
// radix sort (CUB, on stream-ordered scratch) orders a chunk of rows at
// once; the keys are unique, so no stability is relied on. Then one kernel
// sums each row's kept probability mass in fixed-order partial sums, and
// one block per row runs the top-p and inverse-CDF prefix sums over the
// sorted row in double, stopping at the crossing. The sums are tree-ordered
// rather than sequential, so a u (or a top_p) within ~1e-15 of a cumulative
// boundary may fall on the other side than on the CPU; otherwise the token
// is the CPU's.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/cuda/cuda_status.h"
#include "core/cuda/kernels.h"
#include "core/status_macros.h"

namespace moe::cuda {
namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxBlockThreads = 1024;

constexpr int kMaxTopK = 32;
constexpr int kMaxExperts = 1024;
constexpr int kExpertsPerLane = kMaxExperts / kWarpSize;
constexpr int kGatingWarpsPerBlock = 4;

constexpr int64_t kMaxSampleVocab = 262144;
// Rows are sorted in chunks of at most this many elements, which bounds
// the scratch at 2 * 8 bytes per element (64 MiB) plus CUB's own.
constexpr int64_t kMaxSortItems = int64_t{1} << 22;
constexpr int kMassThreads = 256;
constexpr int64_t kMassItemsPerBlock = 8192;
constexpr int kMaxMassBlocks = 32;
constexpr int kScanItems = 4;  // consecutive sorted elements per thread

constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------
// Arg-max with the lowest index among equals.

// True when (v, i) beats (best_v, best_i): larger, or equal with a lower
// index. NaN never beats anything.
__device__ __forceinline__ bool Beats(float v, int32_t i, float best_v,
                                      int32_t best_i) {
  return v > best_v || (v == best_v && i < best_i);
}

__device__ __forceinline__ void WarpArgMax(float& v, int32_t& i) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const float other_v = __shfl_xor_sync(kFullMask, v, offset);
    const int32_t other_i = __shfl_xor_sync(kFullMask, i, offset);
    if (Beats(other_v, other_i, v, i)) {
      v = other_v;
      i = other_i;
    }
  }
}

// core/sampling.h ArgMax of row[0, n) over the block, returned to every
// thread: the first index of the largest value. As on the CPU, NaNs are
// never taken, except that a NaN at index 0 is the answer (nothing compares
// greater than it). blockDim.x must be a multiple of 32.
__device__ int32_t BlockArgMax(const float* row, int32_t n) {
  __shared__ float warp_v[kMaxBlockThreads / kWarpSize];
  __shared__ int32_t warp_i[kMaxBlockThreads / kWarpSize];
  float best_v = -INFINITY;
  int32_t best_i = n;  // nothing taken yet (an all-NaN row)
  for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = row[i];
    if (Beats(v, i, best_v, best_i)) {
      best_v = v;
      best_i = i;
    }
  }
  WarpArgMax(best_v, best_i);
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  if (lane == 0) {
    warp_v[warp] = best_v;
    warp_i[warp] = best_i;
  }
  __syncthreads();
  const int warps = blockDim.x / kWarpSize;
  best_v = lane < warps ? warp_v[lane] : -INFINITY;
  best_i = lane < warps ? warp_i[lane] : n;
  WarpArgMax(best_v, best_i);
  __syncthreads();  // warp_v/warp_i are reused by the next call
  return (best_i == n || isnan(row[0])) ? 0 : best_i;
}

__global__ void ArgMaxRowsKernel(const float* logits, int64_t rows, int32_t n,
                                 int32_t* out) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int32_t best = BlockArgMax(logits + r * n, n);
    if (threadIdx.x == 0) out[r] = best;
  }
}

int ThreadsFor(int64_t n) {
  const int64_t warps = CeilDiv(n, kWarpSize);
  return static_cast<int>(
      std::clamp<int64_t>(warps * kWarpSize, kWarpSize, kMaxBlockThreads));
}

unsigned GridBlocks(int64_t blocks) {
  return static_cast<unsigned>(
      std::clamp<int64_t>(blocks, 1, int64_t{1} << 16));
}

// ---------------------------------------------------------------------------
// Top-k gating.

// One warp per token; lane l holds experts l, l + 32, l + 64, ...
__global__ void TopKGatingKernel(const float* logits, int64_t tokens,
                                 int num_experts, int k, bool renormalize,
                                 int32_t* experts, float* weights) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t t =
      int64_t{blockIdx.x} * kGatingWarpsPerBlock + threadIdx.x / kWarpSize;
  if (t >= tokens) return;  // the whole warp leaves together
  const float* row = logits + t * num_experts;

  // cpu::Softmax: float max, float exp(x - max), the sum in double, then a
  // multiply by float(1 / sum).
  float p[kExpertsPerLane];
  float max = -INFINITY;
#pragma unroll
  for (int j = 0; j < kExpertsPerLane; ++j) {
    const int id = j * kWarpSize + lane;
    p[j] = id < num_experts ? row[id] : -INFINITY;
    max = fmaxf(max, p[j]);
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    max = fmaxf(max, __shfl_xor_sync(kFullMask, max, offset));
  }
  double sum = 0;
#pragma unroll
  for (int j = 0; j < kExpertsPerLane; ++j) {
    if (j * kWarpSize + lane < num_experts) {
      p[j] = expf(p[j] - max);
      sum += p[j];
    }
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    sum += __shfl_xor_sync(kFullMask, sum, offset);
  }
  const float inv = static_cast<float>(1.0 / sum);
#pragma unroll
  for (int j = 0; j < kExpertsPerLane; ++j) p[j] *= inv;

  // k rounds: each lane offers its best untaken expert (strict > over
  // ascending ids keeps the lower id among equals), the warp keeps the
  // best offer, and the owning lane marks it taken. The top-k sum is
  // accumulated in selection order, as the CPU sums it.
  uint32_t taken = 0;
  int32_t my_expert = 0;
  float my_weight = 0.0f;
  float top_sum = 0.0f;
  for (int round = 0; round < k; ++round) {
    float best_v = -INFINITY;
    int32_t best_i = kMaxExperts;
#pragma unroll
    for (int j = 0; j < kExpertsPerLane; ++j) {
      const int id = j * kWarpSize + lane;
      if (id < num_experts && !(taken >> j & 1u) &&
          Beats(p[j], id, best_v, best_i)) {
        best_v = p[j];
        best_i = id;
      }
    }
    WarpArgMax(best_v, best_i);
    if (best_i < num_experts && best_i % kWarpSize == lane) {
      taken |= 1u << (best_i / kWarpSize);
    }
    if (lane == round) {
      my_expert = best_i;
      my_weight = best_v;
    }
    top_sum += best_v;
  }
  if (lane < k) {
    experts[t * k + lane] = my_expert;
    weights[t * k + lane] = renormalize ? my_weight / top_sum : my_weight;
  }
}

// ---------------------------------------------------------------------------
// Sampling.

// Maps a float to an unsigned key in the same order; -0 and +0 (equal as
// floats) share the key of +0.
__device__ __forceinline__ uint32_t OrderedBits(float f) {
  uint32_t b = __float_as_uint(f);
  if ((b & 0x7fffffffu) == 0) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float FromOrderedBits(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Sort key of element `id` of chunk row `r`: ascending keys are row-major,
// then descending logit, then ascending id.
__global__ void MakeSortKeysKernel(const float* logits, int64_t items,
                                   int64_t n, int id_bits, uint64_t* keys) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < items;
       i += stride) {
    const int64_t r = i / n;
    const int64_t id = i - r * n;
    keys[i] = static_cast<uint64_t>(r) << (32 + id_bits) |
              static_cast<uint64_t>(~OrderedBits(logits[i])) << id_bits |
              static_cast<uint64_t>(id);
  }
}

__device__ __forceinline__ float SortedLogit(uint64_t key, int id_bits) {
  return FromOrderedBits(~static_cast<uint32_t>(key >> id_bits));
}

__device__ __forceinline__ int32_t SortedId(uint64_t key, int id_bits) {
  return static_cast<int32_t>(key & ((uint64_t{1} << id_bits) - 1));
}

// Candidates kept by top-k (0 or >= n: all), as Sampler::Sample.
__device__ __forceinline__ int64_t KeptCount(int32_t top_k, int64_t n) {
  return top_k > 0 && top_k < n ? top_k : n;
}

// Sampler::Sample's unnormalised probability: exp((logit - best) / T) in
// double, exactly 1 for the best logit.
__device__ __forceinline__ double Weight(float logit, double best,
                                         double inv_t) {
  const double diff = static_cast<double>(logit) - best;
  return diff == 0 ? 1.0 : exp(diff * inv_t);
}

// Per (row, slice): the sum of the weights of the row's kept candidates in
// the slice, into partial[row * slices + slice]. Rows with temperature 0
// (argmax) write 0.
__global__ void SampleMassKernel(const uint64_t* sorted, int64_t n, int id_bits,
                                 const float* temperature, const int32_t* top_k,
                                 int slices, double* partial) {
  using Reduce = cub::BlockReduce<double, kMassThreads>;
  __shared__ typename Reduce::TempStorage reduce_storage;
  const int64_t r = blockIdx.x / slices;
  const int64_t slice = blockIdx.x % slices;
  const float temp = temperature[r];
  double sum = 0;
  if (temp != 0.0f) {
    const uint64_t* keys = sorted + r * n;
    const int64_t keep = KeptCount(top_k[r], n);
    const double best = SortedLogit(keys[0], id_bits);
    const double inv_t = 1.0 / static_cast<double>(temp);
    const int64_t per_slice = CeilDiv(keep, slices);
    const int64_t end = std::min(keep, (slice + 1) * per_slice);
    for (int64_t i = slice * per_slice + threadIdx.x; i < end;
         i += kMassThreads) {
      sum += Weight(SortedLogit(keys[i], id_bits), best, inv_t);
    }
  }
  sum = Reduce(reduce_storage).Sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// Probability of sorted candidate i: weight / mass, then / total when the
// top-p nucleus was renormalised (the CPU's two divisions).
struct SortedProb {
  const uint64_t* keys;
  int id_bits;
  double best;
  double inv_t;
  double mass;
  double total;  // 0: no renormalisation
  __device__ double operator()(int64_t i) const {
    const double p = Weight(SortedLogit(keys[i], id_bits), best, inv_t) / mass;
    return total != 0 ? p / total : p;
  }
};

struct ReachesAtLeast {  // top-p: cum >= top_p
  double bound;
  __device__ bool operator()(double cum) const { return cum >= bound; }
};
struct Exceeds {  // the draw: u < cum
  double bound;
  __device__ bool operator()(double cum) const { return bound < cum; }
};

struct Crossing {
  int64_t index;  // first i < count whose prefix sum satisfies the test; -1
  double cum;     // the prefix sum there, or the sum of all when none
};

// Block-wide: prefix sums of prob(0..count) in order, kThreads * kScanItems
// at a time, until the first prefix that satisfies `test`.
template <int kThreads, typename Prob, typename Test>
__device__ Crossing FirstCrossing(int64_t count, const Prob& prob,
                                  const Test& test) {
  using Scan = cub::BlockScan<double, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ unsigned long long found;
  __shared__ double found_cum;
  constexpr unsigned long long kNone = ~0ull;
  if (threadIdx.x == 0) found = kNone;
  __syncthreads();
  double carry = 0;  // the sum of the chunks before this one
  for (int64_t base = 0; base < count; base += int64_t{kThreads} * kScanItems) {
    const int64_t first = base + int64_t{threadIdx.x} * kScanItems;
    double inclusive[kScanItems];
    double run = 0;
#pragma unroll
    for (int j = 0; j < kScanItems; ++j) {
      if (first + j < count) run += prob(first + j);
      inclusive[j] = run;
    }
    double before = 0;
    double chunk = 0;
    Scan(scan_storage).ExclusiveSum(run, before, chunk);
    int64_t mine = -1;
    double mine_cum = 0;
#pragma unroll
    for (int j = 0; j < kScanItems; ++j) {
      const double cum = carry + before + inclusive[j];
      if (mine < 0 && first + j < count && test(cum)) {
        mine = first + j;
        mine_cum = cum;
      }
    }
    if (mine >= 0) atomicMin(&found, static_cast<unsigned long long>(mine));
    __syncthreads();
    if (mine >= 0 && static_cast<unsigned long long>(mine) == found) {
      found_cum = mine_cum;
    }
    carry += chunk;
    __syncthreads();
    if (found != kNone) break;  // the same decision in every thread
  }
  Crossing result{-1, carry};
  if (found != kNone) result = {static_cast<int64_t>(found), found_cum};
  __syncthreads();  // found/found_cum are reset by the next call
  return result;
}

// One block per row: argmax for temperature 0, else Sampler::Sample's
// top-k, top-p and inverse-CDF draw over the sorted row.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    SampleDrawKernel(const float* logits, const uint64_t* sorted, int64_t n,
                     int id_bits, const float* temperature,
                     const int32_t* top_k, const float* top_p, const double* u,
                     const double* partial, int slices, int32_t* out) {
  __shared__ double mass_shared;
  const int64_t r = blockIdx.x;
  const float temp = temperature[r];
  if (temp == 0.0f) {
    const int32_t best = BlockArgMax(logits + r * n, static_cast<int32_t>(n));
    if (threadIdx.x == 0) out[r] = best;
    return;
  }
  const uint64_t* keys = sorted + r * n;
  if (threadIdx.x == 0) {
    double mass = 0;
    for (int s = 0; s < slices; ++s) mass += partial[r * slices + s];
    mass_shared = mass;
  }
  __syncthreads();
  int64_t keep = KeptCount(top_k[r], n);
  SortedProb prob{keys,
                  id_bits,
                  static_cast<double>(SortedLogit(keys[0], id_bits)),
                  1.0 / static_cast<double>(temp),
                  mass_shared,
                  0.0};
  const float p = top_p[r];
  if (p < 1.0f) {
    // The smallest prefix whose mass reaches top_p (at least one token),
    // renormalised by that mass.
    const Crossing nucleus = FirstCrossing<kThreads>(
        keep, prob, ReachesAtLeast{static_cast<double>(p)});
    if (nucleus.index >= 0) keep = nucleus.index + 1;
    prob.total = nucleus.cum;
  }
  const Crossing draw = FirstCrossing<kThreads>(keep, prob, Exceeds{u[r]});
  const int64_t rank = draw.index >= 0 ? draw.index : keep - 1;
  if (threadIdx.x == 0) out[r] = SortedId(keys[rank], id_bits);
}

// Frees stream-ordered scratch when the launching function returns.
class StreamScratch {
 public:
  explicit StreamScratch(cudaStream_t stream) : stream_(stream) {}
  ~StreamScratch() {
    if (data_ != nullptr) cudaFreeAsync(data_, stream_);
  }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;

  absl::Status Allocate(size_t bytes) {
    const cudaError_t error = cudaMallocAsync(&data_, bytes, stream_);
    if (error == cudaSuccess) return absl::OkStatus();
    data_ = nullptr;
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat(
        "SampleRows: cudaMallocAsync of ", bytes,
        " bytes of sort scratch failed: ", cudaGetErrorString(error)));
  }
  char* data() const { return static_cast<char*>(data_); }

 private:
  cudaStream_t stream_;
  void* data_ = nullptr;
};

size_t RoundUp256(size_t bytes) { return (bytes + 255) / 256 * 256; }

template <int kThreads>
void LaunchDraw(int64_t chunk_rows, const float* logits, const uint64_t* sorted,
                int64_t n, int id_bits, const float* temperature,
                const int32_t* top_k, const float* top_p, const double* u,
                const double* partial, int slices, int32_t* out,
                cudaStream_t stream) {
  SampleDrawKernel<kThreads>
      <<<static_cast<unsigned>(chunk_rows), kThreads, 0, stream>>>(
          logits, sorted, n, id_bits, temperature, top_k, top_p, u, partial,
          slices, out);
}

}  // namespace

absl::Status TopKGating(const float* logits, int64_t tokens, int num_experts,
                        int k, bool renormalize, int32_t* experts,
                        float* weights, cudaStream_t stream) {
  constexpr char kName[] = "TopKGating";
  if (tokens < 0 || k < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        kName, ": negative size (tokens = ", tokens, ", k = ", k, ")"));
  }
  if (tokens == 0 || k == 0) return absl::OkStatus();
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return absl::InvalidArgumentError(
        absl::StrCat(kName, ": num_experts = ", num_experts, " is outside [1, ",
                     kMaxExperts, "]"));
  }
  if (k > kMaxTopK || k > num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat(kName, ": k = ", k, " is above ",
                     k > kMaxTopK ? "the supported 32" : "num_experts = ",
                     k > kMaxTopK ? "" : absl::StrCat(num_experts)));
  }
  const int64_t blocks = CeilDiv(tokens, kGatingWarpsPerBlock);
  if (blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kName, ": tokens = ", tokens, " is too many"));
  }
  TopKGatingKernel<<<static_cast<unsigned>(blocks),
                     kGatingWarpsPerBlock * kWarpSize, 0, stream>>>(
      logits, tokens, num_experts, k, renormalize, experts, weights);
  return LaunchStatus(kName);
}

absl::Status ArgMaxRows(const float* logits, int64_t rows, int64_t n,
                        int32_t* out, cudaStream_t stream) {
  constexpr char kName[] = "ArgMaxRows";
  if (rows < 0 || n < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        kName, ": negative size (rows = ", rows, ", n = ", n, ")"));
  }
  if (rows == 0 || n == 0) return absl::OkStatus();
  if (n > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kName, ": n = ", n, " does not fit the int32 token ids"));
  }
  ArgMaxRowsKernel<<<GridBlocks(rows), ThreadsFor(n), 0, stream>>>(
      logits, rows, static_cast<int32_t>(n), out);
  return LaunchStatus(kName);
}

namespace {

// Bits needed to write `v` (0 for 0), as C++20's std::bit_width (the .cu
// files are C++17).
int BitWidth(uint64_t v) {
  int bits = 0;
  while (v != 0) {
    ++bits;
    v >>= 1;
  }
  return bits;
}

}  // namespace

absl::Status SampleRows(const float* logits, int64_t rows, int64_t n,
                        const float* temperature, const int32_t* top_k,
                        const float* top_p, const double* u, int32_t* out,
                        cudaStream_t stream) {
  constexpr char kName[] = "SampleRows";
  if (rows < 0 || n < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        kName, ": negative size (rows = ", rows, ", n = ", n, ")"));
  }
  if (rows == 0 || n == 0) return absl::OkStatus();
  if (n > kMaxSampleVocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        kName, ": n = ", n, " is above the supported ", kMaxSampleVocab));
  }
  // Key bits: row in chunk | 32 of logit | id_bits of id (<= 22 + 32 + 18).
  const int id_bits = BitWidth(static_cast<uint64_t>(n - 1));
  const int64_t chunk_rows =
      std::min(rows, std::max<int64_t>(1, kMaxSortItems / n));
  const int end_bit =
      32 + id_bits + BitWidth(static_cast<uint64_t>(chunk_rows - 1));
  const int slices = static_cast<int>(
      std::clamp<int64_t>(CeilDiv(n, kMassItemsPerBlock), 1, kMaxMassBlocks));

  // CUB's scratch for the largest chunk and for the last, shorter one.
  size_t sort_bytes = 0;
  for (const int64_t chunk : {chunk_rows, (rows - 1) % chunk_rows + 1}) {
    size_t bytes = 0;
    cub::DoubleBuffer<uint64_t> none(nullptr, nullptr);
    MOE_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortKeys(
        nullptr, bytes, none, static_cast<int>(chunk * n), 0, end_bit, stream));
    sort_bytes = std::max(sort_bytes, bytes);
  }
  const size_t keys_bytes = RoundUp256(chunk_rows * n * sizeof(uint64_t));
  const size_t partial_bytes = RoundUp256(chunk_rows * slices * sizeof(double));
  StreamScratch scratch(stream);
  RETURN_IF_ERROR(
      scratch.Allocate(2 * keys_bytes + partial_bytes + sort_bytes));
  uint64_t* keys_a = reinterpret_cast<uint64_t*>(scratch.data());
  uint64_t* keys_b = reinterpret_cast<uint64_t*>(scratch.data() + keys_bytes);
  double* partial = reinterpret_cast<double*>(scratch.data() + 2 * keys_bytes);
  void* sort_scratch = scratch.data() + 2 * keys_bytes + partial_bytes;

  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t nr = std::min(chunk_rows, rows - r0);
    const int64_t items = nr * n;
    MakeSortKeysKernel<<<GridBlocks(CeilDiv(items, 256)), 256, 0, stream>>>(
        logits + r0 * n, items, n, id_bits, keys_a);
    RETURN_IF_ERROR(LaunchStatus("SampleRows (sort keys)"));
    cub::DoubleBuffer<uint64_t> keys(keys_a, keys_b);
    size_t bytes = sort_bytes;
    MOE_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortKeys(
        sort_scratch, bytes, keys, static_cast<int>(items), 0, end_bit,
        stream));
    const uint64_t* sorted = keys.Current();
    SampleMassKernel<<<static_cast<unsigned>(nr * slices), kMassThreads, 0,
                       stream>>>(sorted, n, id_bits, temperature + r0,
                                 top_k + r0, slices, partial);
    RETURN_IF_ERROR(LaunchStatus("SampleRows (mass)"));
    // Small rows get small blocks. (1024 threads would cap registers at
    // 64 and spill the double exp.)
    if (n <= 4 * 128) {
      LaunchDraw<128>(nr, logits + r0 * n, sorted, n, id_bits, temperature + r0,
                      top_k + r0, top_p + r0, u + r0, partial, slices, out + r0,
                      stream);
    } else {
      LaunchDraw<512>(nr, logits + r0 * n, sorted, n, id_bits, temperature + r0,
                      top_k + r0, top_p + r0, u + r0, partial, slices, out + r0,
                      stream);
    }
    RETURN_IF_ERROR(LaunchStatus(kName));
  }
  return absl::OkStatus();
}

}  // namespace moe::cuda
