// Tests of core/cuda/paged_attention.h against the CPU reference
// (core/cpu/attention.h) over a host KvCache with the same block tables:
// - cuda::WriteKv leaves the device storage byte-identical to the host
//   layer storage after cpu::WriteKv (same layout, so block ids agree);
// - cuda::PagedAttention matches cpu::PagedAttention for decode batches
//   (contexts of 1 to 2000+ tokens, so long contexts are split across
//   thread blocks) and prefill batches (chunks after cached tokens, tokens
//   of several sequences in one batch, in any order), with GQA/MQA, head_dim
//   64 to 256, sliding windows, block sizes 16 and 32 and shuffled block
//   tables; it writes nothing outside each head's columns;
// - bad parameters are refused with INVALID_ARGUMENT, and storage the
//   device cannot hold with RESOURCE_EXHAUSTED naming the bytes.
// Every test skips without a usable CUDA GPU.
#include "core/cuda/paged_attention.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/cpu/attention.h"
#include "core/cuda/cuda_status.h"
#include "core/cuda/device_buffer.h"
#include "core/kv_cache.h"
#include "gtest/gtest.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernel_test_util.h"

namespace moe::cuda {
namespace {

using ::moe::testing::RandomValues;

// Both sides compute in float32 but sum in different orders: the CPU takes
// each dot product with eight partial sums and the softmax denominator in
// double over the whole context; the GPU sums dot products per lane (and
// across warps), and keeps an online softmax rescaled every 32 keys and
// across partitions. Outputs are convex combinations of V values in
// [-1, 1], so these differences stay around 1e-6; 1e-4 leaves margin for
// 2000-token contexts while a wrong key (masking, window, block lookup)
// or a wrong head moves an output by far more.
constexpr float kTolerance = 1e-4f;
constexpr float kSentinel = -777.25f;
constexpr int kLayers = 2;
constexpr int kLayer = 1;  // the layer attended; layer 0 holds decoys

template <typename T>
absl::StatusOr<DeviceBuffer<T>> ToDevice(const std::vector<T>& host) {
  DeviceBuffer<T> buffer;
  if (absl::Status status = buffer.Reserve(
          std::max<int64_t>(1, static_cast<int64_t>(host.size())));
      !status.ok()) {
    return status;
  }
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpy(buffer.data(), host.data(),
                                      host.size() * sizeof(T),
                                      cudaMemcpyHostToDevice));
  return buffer;
}

template <typename T>
absl::StatusOr<std::vector<T>> ToHost(const T* device, int64_t count) {
  std::vector<T> host(count);
  MOE_CUDA_RETURN_IF_ERROR(cudaMemcpy(host.data(), device, count * sizeof(T),
                                      cudaMemcpyDeviceToHost));
  return host;
}

// A non-blocking stream (as the forward pass uses), created only once the
// test knows there is a GPU.
class Stream {
 public:
  Stream() = default;
  ~Stream() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  absl::Status Create() {
    return CudaStatus(
        cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
        "cudaStreamCreateWithFlags");
  }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// One sequence of the batch: `history` cached tokens, then `tokens` new ones.
struct SeqSpec {
  int history;
  int tokens;
};

struct AttentionCase {
  std::string name;
  std::vector<SeqSpec> seqs;
  int num_heads;
  int num_kv_heads;
  int head_dim;
  int block_size;
  int window = 0;
  bool decode = false;          // every sequence has one new token
  bool shuffle_blocks = true;   // block tables in random block order
  bool shuffle_tokens = false;  // batch rows not grouped by sequence
};

void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name; }

struct SeqData {
  SeqSpec spec;
  KvCache::SeqId id;
  std::vector<int32_t> table;
  // [layer][history + tokens, kv_dim] contiguous.
  std::vector<float> k[kLayers], v[kLayers];
  std::vector<float> q;        // [tokens, ldq]
  std::vector<float> cpu_out;  // [tokens, ldo]
};

class CudaPagedAttentionTest : public ::testing::TestWithParam<AttentionCase> {
 protected:
  const AttentionCase& c() const { return GetParam(); }
  int kv_dim() const { return c().num_kv_heads * c().head_dim; }
  int64_t width() const { return int64_t{c().num_heads} * c().head_dim; }
  // Odd strides: rows of q and out are not 16-byte aligned.
  int64_t ldq() const { return width() + 3; }
  int64_t ldo() const { return width() + 5; }

  KvCacheShape Shape() const {
    KvCacheShape shape;
    shape.num_layers = kLayers;
    shape.num_kv_heads = c().num_kv_heads;
    shape.head_dim = c().head_dim;
    shape.block_size = c().block_size;
    return shape;
  }

  // Allocates the sequences' blocks in the host cache: in random block
  // order and interleaved between sequences (shuffle_blocks), or each
  // sequence's blocks consecutive.
  void AllocateBlocks() {
    const int bs = c().block_size;
    int needed = 0;
    for (const SeqSpec& s : c().seqs) {
      needed += (s.history + s.tokens + bs - 1) / bs;
    }
    // Spare blocks stay unused: the storage comparison covers them too.
    absl::StatusOr<std::unique_ptr<KvCache>> cache =
        KvCache::Create(Shape(), int64_t{needed + 7} * Shape().BytesPerBlock());
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::move(*cache);
    if (c().shuffle_blocks) {
      // Take every block (one per throwaway sequence), then free them in
      // random order: the free list hands them out in that order.
      const int n = cache_->num_blocks();
      for (int b = 0; b < n; ++b) {
        ASSERT_TRUE(cache_->AddSequence(1000000 + b).ok());
        ASSERT_TRUE(cache_->Append(1000000 + b, 1).ok());
      }
      std::vector<int> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng_);
      for (int b : order) cache_->FreeSequence(1000000 + b);
    }
    seqs_.clear();
    for (size_t i = 0; i < c().seqs.size(); ++i) {
      SeqData s;
      s.spec = c().seqs[i];
      s.id = static_cast<KvCache::SeqId>(i);
      ASSERT_TRUE(cache_->AddSequence(s.id).ok());
      seqs_.push_back(std::move(s));
    }
    if (c().shuffle_blocks) {
      for (bool grew = true; grew;) {
        grew = false;
        for (SeqData& s : seqs_) {
          if (cache_->NumTokens(s.id) < s.spec.history + s.spec.tokens) {
            ASSERT_TRUE(cache_->Append(s.id, 1).ok());
            grew = true;
          }
        }
      }
    } else {
      for (SeqData& s : seqs_) {
        ASSERT_TRUE(cache_->Append(s.id, s.spec.history + s.spec.tokens).ok());
      }
    }
    for (SeqData& s : seqs_) s.table = cache_->BlockTable(s.id);
  }

  // Writes every sequence's K/V rows of both layers, history first and then
  // the new tokens: on the host with cpu::WriteKv, on the device with
  // cuda::WriteKv (all sequences' rows in one call per piece).
  void WriteKvBothSides() {
    absl::StatusOr<std::unique_ptr<DeviceKvStorage>> storage =
        DeviceKvStorage::Create(Shape(), cache_->num_blocks());
    ASSERT_TRUE(storage.ok()) << storage.status();
    storage_ = std::move(*storage);
    ASSERT_EQ(storage_->block_bytes_per_layer(), cache_->BlockBytesPerLayer());

    const int bs = c().block_size;
    for (int layer = 0; layer < kLayers; ++layer) {
      // Layer 1's stride keeps rows 16-byte aligned (the vectorised copy),
      // layer 0's does not (the scalar one).
      const int64_t ld = kv_dim() + (layer == kLayer ? 4 : 1);
      for (SeqData& s : seqs_) {
        const int total = s.spec.history + s.spec.tokens;
        // Layer 0 gets other values: reading it would be caught.
        s.k[layer] = RandomValues(int64_t{total} * kv_dim(), rng_, -1.5f, 1.5f);
        s.v[layer] = RandomValues(int64_t{total} * kv_dim(), rng_,
                                  layer == kLayer ? -1.0f : 4.0f,
                                  layer == kLayer ? 1.0f : 6.0f);
      }
      for (int piece = 0; piece < 2; ++piece) {
        std::vector<float> k_rows, v_rows;
        std::vector<int32_t> slots;
        for (SeqData& s : seqs_) {
          const int first = piece == 0 ? 0 : s.spec.history;
          const int count = piece == 0 ? s.spec.history : s.spec.tokens;
          std::vector<float> ks(int64_t{count} * ld, 1e3f),
              vs(int64_t{count} * ld, 1e3f);
          for (int t = 0; t < count; ++t) {
            const int64_t src = int64_t{first + t} * kv_dim();
            std::copy_n(s.k[layer].data() + src, kv_dim(), ks.data() + t * ld);
            std::copy_n(s.v[layer].data() + src, kv_dim(), vs.data() + t * ld);
            const int pos = first + t;
            slots.push_back(s.table[pos / bs] * bs + pos % bs);
          }
          cpu::WriteKv(*cache_, layer, s.table, first, count, ks.data(),
                       vs.data(), ld);
          k_rows.insert(k_rows.end(), ks.begin(), ks.end());
          v_rows.insert(v_rows.end(), vs.begin(), vs.end());
        }
        if (slots.empty()) continue;
        absl::StatusOr<DeviceBuffer<float>> dk = ToDevice(k_rows);
        absl::StatusOr<DeviceBuffer<float>> dv = ToDevice(v_rows);
        absl::StatusOr<DeviceBuffer<int32_t>> dslots = ToDevice(slots);
        ASSERT_TRUE(dk.ok() && dv.ok() && dslots.ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const absl::Status status = WriteKv(
            *storage_, layer, dk->data(), dv->data(), ld, dslots->data(),
            static_cast<int64_t>(slots.size()), stream_.get());
        ASSERT_TRUE(status.ok()) << status;
        ASSERT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess);
      }
    }
  }

  // The device storage equals the host layer storage, byte for byte.
  void ExpectSameStorage() {
    const int64_t block_floats =
        cache_->BlockBytesPerLayer() / int64_t{sizeof(float)};
    for (int layer = 0; layer < kLayers; ++layer) {
      absl::StatusOr<std::vector<float>> device = ToHost(
          storage_->layer_data(layer), cache_->num_blocks() * block_floats);
      ASSERT_TRUE(device.ok()) << device.status();
      for (int32_t b = 0; b < cache_->num_blocks(); ++b) {
        ASSERT_EQ(std::memcmp(device->data() + b * block_floats,
                              cache_->BlockData(layer, b),
                              cache_->BlockBytesPerLayer()),
                  0)
            << "layer " << layer << " block " << b;
      }
    }
  }

  void RunCpu() {
    std::vector<cpu::AttentionSegment> segments;
    for (SeqData& s : seqs_) {
      s.q = RandomValues(int64_t{s.spec.tokens} * ldq(), rng_, -2.0f, 2.0f);
      s.cpu_out.assign(int64_t{s.spec.tokens} * ldo(), kSentinel);
      cpu::AttentionSegment seg;
      seg.q = s.q.data();
      seg.ldq = ldq();
      seg.out = s.cpu_out.data();
      seg.ldo = ldo();
      seg.tokens = s.spec.tokens;
      seg.first_pos = s.spec.history;
      seg.block_table = s.table;
      segments.push_back(seg);
    }
    cpu::AttentionParams params;
    params.layer = kLayer;
    params.num_heads = c().num_heads;
    params.num_kv_heads = c().num_kv_heads;
    params.head_dim = c().head_dim;
    params.scale = 1.0f / std::sqrt(static_cast<float>(c().head_dim));
    params.sliding_window = c().window;
    cpu::PagedAttention(segments, params, *cache_, nullptr);
  }

  // Runs cuda::PagedAttention over the batch (decode or prefill kernel) and
  // compares every output with the CPU's.
  void RunGpuAndCompare(bool decode_only) {
    SCOPED_TRACE(decode_only ? "decode kernel" : "prefill kernel");
    // Batch rows: (sequence, token), grouped by sequence unless
    // shuffle_tokens.
    std::vector<std::pair<int, int>> rows;
    for (size_t s = 0; s < seqs_.size(); ++s) {
      for (int t = 0; t < seqs_[s].spec.tokens; ++t) {
        rows.emplace_back(static_cast<int>(s), t);
      }
    }
    if (c().shuffle_tokens) std::shuffle(rows.begin(), rows.end(), rng_);
    const int64_t tokens = static_cast<int64_t>(rows.size());
    std::vector<float> q(tokens * ldq(), 0.0f);
    std::vector<int32_t> seq_of, pos_of, tables, table_start;
    int max_pos = 0;
    for (int64_t b = 0; b < tokens; ++b) {
      const auto [s, t] = rows[b];
      std::copy_n(seqs_[s].q.data() + t * ldq(), ldq(), q.data() + b * ldq());
      seq_of.push_back(s);
      pos_of.push_back(seqs_[s].spec.history + t);
      max_pos = std::max(max_pos, pos_of.back());
    }
    for (const SeqData& s : seqs_) {
      table_start.push_back(static_cast<int32_t>(tables.size()));
      tables.insert(tables.end(), s.table.begin(), s.table.end());
    }
    const std::vector<float> out_init(tokens * ldo(), kSentinel);
    absl::StatusOr<DeviceBuffer<float>> dq = ToDevice(q);
    absl::StatusOr<DeviceBuffer<float>> dout = ToDevice(out_init);
    absl::StatusOr<DeviceBuffer<int32_t>> dseq = ToDevice(seq_of);
    absl::StatusOr<DeviceBuffer<int32_t>> dpos = ToDevice(pos_of);
    absl::StatusOr<DeviceBuffer<int32_t>> dtables = ToDevice(tables);
    absl::StatusOr<DeviceBuffer<int32_t>> dstart = ToDevice(table_start);
    ASSERT_TRUE(dq.ok() && dout.ok() && dseq.ok() && dpos.ok() &&
                dtables.ok() && dstart.ok());
    // Pageable copies may still be in flight when cudaMemcpy returns; the
    // kernels run on a non-blocking stream.
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

    AttentionBatch batch;
    batch.q = dq->data();
    batch.ldq = ldq();
    batch.out = dout->data();
    batch.ldo = ldo();
    batch.tokens = tokens;
    batch.seq_of = dseq->data();
    batch.pos_of = dpos->data();
    batch.block_tables = dtables->data();
    batch.table_start = dstart->data();
    batch.max_pos = max_pos;
    batch.decode_only = decode_only;
    AttentionParams params;
    params.layer = kLayer;
    params.num_heads = c().num_heads;
    params.num_kv_heads = c().num_kv_heads;
    params.head_dim = c().head_dim;
    params.scale = 1.0f / std::sqrt(static_cast<float>(c().head_dim));
    params.sliding_window = c().window;
    const absl::Status status =
        PagedAttention(batch, params, *storage_, stream_.get());
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess)
        << cudaGetErrorString(cudaGetLastError());
    absl::StatusOr<std::vector<float>> out =
        ToHost(dout->data(), tokens * ldo());
    ASSERT_TRUE(out.ok()) << out.status();

    double max_diff = 0;
    int failures = 0;
    for (int64_t b = 0; b < tokens; ++b) {
      const auto [s, t] = rows[b];
      const float* want = seqs_[s].cpu_out.data() + t * ldo();
      const float* got = out->data() + b * ldo();
      for (int64_t col = 0; col < ldo(); ++col) {
        if (col >= width()) {
          if (got[col] != kSentinel && ++failures <= 5) {
            ADD_FAILURE() << "row " << b << " padding column " << col
                          << " was written: " << got[col];
          }
          continue;
        }
        const double diff = std::fabs(double{got[col]} - want[col]);
        if (!(diff <= kTolerance) && ++failures <= 5) {  // NaN fails too
          ADD_FAILURE() << "sequence " << s << " (history "
                        << seqs_[s].spec.history << ") token " << t << " head "
                        << col / c().head_dim << " dim " << col % c().head_dim
                        << ": gpu " << got[col] << " cpu " << want[col];
        }
        if (diff > max_diff || std::isnan(diff)) max_diff = diff;
      }
    }
    EXPECT_EQ(failures, 0) << "outputs off by more than " << kTolerance;
    std::printf(
        "[attention] %s, %s kernel: max |gpu - cpu| = %.3g over %lld "
        "tokens\n",
        c().name.c_str(), decode_only ? "decode" : "prefill", max_diff,
        static_cast<long long>(tokens));
  }

  std::mt19937 rng_{20240817};
  Stream stream_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<DeviceKvStorage> storage_;
  std::vector<SeqData> seqs_;
};

TEST_P(CudaPagedAttentionTest, WriteKvMatchesHostLayoutAndAttentionMatchesCpu) {
  MOE_SKIP_WITHOUT_GPU();
  const absl::Status stream = stream_.Create();
  ASSERT_TRUE(stream.ok()) << stream;
  ASSERT_NO_FATAL_FAILURE(AllocateBlocks());
  ASSERT_NO_FATAL_FAILURE(WriteKvBothSides());
  ASSERT_NO_FATAL_FAILURE(ExpectSameStorage());
  RunCpu();
  if (c().decode) {
    ASSERT_NO_FATAL_FAILURE(RunGpuAndCompare(/*decode_only=*/true));
  }
  // The prefill kernel is correct for any batch, decode-shaped ones too.
  ASSERT_NO_FATAL_FAILURE(RunGpuAndCompare(/*decode_only=*/false));
}

std::vector<SeqSpec> DecodeOf(std::initializer_list<int> lengths) {
  std::vector<SeqSpec> seqs;
  for (int length : lengths) seqs.push_back({length - 1, 1});
  return seqs;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CudaPagedAttentionTest,
    ::testing::Values(
        // Decode: contexts of 1, 17, 300 and 2100 tokens; the longest is
        // split across thread blocks and the partitions reduced.
        AttentionCase{.name = "DecodeGqa8x2Dim128Block16",
                      .seqs = DecodeOf({1, 17, 300, 2100}),
                      .num_heads = 8,
                      .num_kv_heads = 2,
                      .head_dim = 128,
                      .block_size = 16,
                      .decode = true},
        AttentionCase{.name = "DecodeMhaDim64Block32",
                      .seqs = DecodeOf({2100, 1, 300, 17}),
                      .num_heads = 4,
                      .num_kv_heads = 4,
                      .head_dim = 64,
                      .block_size = 32,
                      .decode = true},
        // Partitions start at the window's first key, not at 0.
        AttentionCase{.name = "DecodeWindow700",
                      .seqs = DecodeOf({1, 17, 300, 2100, 701}),
                      .num_heads = 8,
                      .num_kv_heads = 2,
                      .head_dim = 128,
                      .block_size = 16,
                      .window = 700,
                      .decode = true},
        AttentionCase{.name = "DecodeWindow16Block32",
                      .seqs = DecodeOf({1, 16, 17, 33, 2050}),
                      .num_heads = 8,
                      .num_kv_heads = 2,
                      .head_dim = 64,
                      .block_size = 32,
                      .window = 16,
                      .decode = true},
        // Every context fits one partition: written without the reduce.
        AttentionCase{.name = "DecodeShortOnePartition",
                      .seqs = DecodeOf({1, 3, 17, 40}),
                      .num_heads = 8,
                      .num_kv_heads = 2,
                      .head_dim = 128,
                      .block_size = 16,
                      .decode = true},
        // MQA with 16 query heads (two head chunks); dynamic shared memory
        // above 48 KiB.
        AttentionCase{.name = "DecodeMqa16Dim256",
                      .seqs = DecodeOf({5, 513, 2050}),
                      .num_heads = 16,
                      .num_kv_heads = 1,
                      .head_dim = 256,
                      .block_size = 16,
                      .decode = true},
        // Groups of 6 (chunks of 2 heads); head_dim not a power of two.
        AttentionCase{.name = "DecodeGroup6Dim80",
                      .seqs = DecodeOf({33, 1000, 2222, 2}),
                      .num_heads = 12,
                      .num_kv_heads = 2,
                      .head_dim = 80,
                      .block_size = 16,
                      .decode = true},
        // Many sequences of mixed lengths in one batch: few partitions per
        // context, and short contexts leave the later ones empty.
        AttentionCase{
            .name = "DecodeManySequences",
            .seqs = DecodeOf({1,   2,   3,   5,   8,   13,  21,  34,  55,  89,
                              144, 233, 377, 610, 987, 100, 200, 300, 400, 500,
                              600, 700, 800, 900, 901, 902, 903, 904}),
            .num_heads = 32,
            .num_kv_heads = 8,
            .head_dim = 128,
            .block_size = 16,
            .decode = true},
        // Prefill: chunks after cached tokens (first_pos > 0), chunks that
        // start mid-block, a one-token chunk.
        AttentionCase{.name = "PrefillGqa8x2Dim128Block16",
                      .seqs = {{0, 37}, {21, 50}, {300, 5}, {0, 1}},
                      .num_heads = 8,
                      .num_kv_heads = 2,
                      .head_dim = 128,
                      .block_size = 16},
        AttentionCase{.name = "PrefillMhaDim64Block32Window24",
                      .seqs = {{0, 100}, {45, 60}, {0, 3}},
                      .num_heads = 4,
                      .num_kv_heads = 4,
                      .head_dim = 64,
                      .block_size = 32,
                      .window = 24},
        AttentionCase{.name = "PrefillMqaDim256",
                      .seqs = {{0, 40}, {70, 33}},
                      .num_heads = 4,
                      .num_kv_heads = 1,
                      .head_dim = 256,
                      .block_size = 16},
        AttentionCase{.name = "PrefillLongHistoryWindow300",
                      .seqs = {{1500, 80}, {0, 130}},
                      .num_heads = 8,
                      .num_kv_heads = 2,
                      .head_dim = 128,
                      .block_size = 16,
                      .window = 300},
        AttentionCase{.name = "PrefillGroup6Dim80Block32",
                      .seqs = {{17, 45}, {0, 64}},
                      .num_heads = 12,
                      .num_kv_heads = 2,
                      .head_dim = 80,
                      .block_size = 32},
        // Batch rows of different sequences interleaved in random order.
        AttentionCase{.name = "PrefillShuffledTokens",
                      .seqs = {{0, 20}, {10, 30}, {5, 7}},
                      .num_heads = 8,
                      .num_kv_heads = 2,
                      .head_dim = 128,
                      .block_size = 16,
                      .shuffle_tokens = true},
        // Each sequence's blocks consecutive (the common allocation).
        AttentionCase{.name = "PrefillContiguousTables",
                      .seqs = {{0, 64}, {17, 31}},
                      .num_heads = 8,
                      .num_kv_heads = 2,
                      .head_dim = 64,
                      .block_size = 16,
                      .shuffle_blocks = false}),
    [](const ::testing::TestParamInfo<AttentionCase>& info) {
      return info.param.name;
    });

// A small storage and a batch that validation refuses before any launch.
class CudaAttentionValidationTest : public ::testing::Test {
 protected:
  absl::Status Run(const AttentionParams& params, int head_dim = 64,
                   int num_kv_heads = 2) {
    KvCacheShape shape;
    shape.num_layers = 2;
    shape.num_kv_heads = num_kv_heads;
    shape.head_dim = head_dim;
    shape.block_size = 16;
    absl::StatusOr<std::unique_ptr<DeviceKvStorage>> storage =
        DeviceKvStorage::Create(shape, 4);
    if (!storage.ok()) return storage.status();
    // Validation must not read these: any non-null pointer will do.
    static float dummy[1];
    static int32_t idummy[1];
    AttentionBatch batch;
    batch.q = dummy;
    batch.out = dummy;
    batch.ldq = batch.ldo = int64_t{params.num_heads} * params.head_dim;
    batch.tokens = 1;
    batch.seq_of = batch.pos_of = batch.block_tables = batch.table_start =
        idummy;
    return PagedAttention(batch, params, **storage, nullptr);
  }

  static AttentionParams Params(int num_heads, int num_kv_heads, int head_dim) {
    AttentionParams params;
    params.layer = 1;
    params.num_heads = num_heads;
    params.num_kv_heads = num_kv_heads;
    params.head_dim = head_dim;
    params.scale = 0.125f;
    return params;
  }
};

TEST_F(CudaAttentionValidationTest, HeadDimAbove256IsRefused) {
  MOE_SKIP_WITHOUT_GPU();
  const absl::Status status = Run(Params(4, 2, 320), 320);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("320"), absl::string_view::npos) << status;
}

TEST_F(CudaAttentionValidationTest, KvHeadsNotDividingHeadsIsRefused) {
  MOE_SKIP_WITHOUT_GPU();
  const absl::Status status = Run(Params(6, 4, 64), 64, 4);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("divide"), absl::string_view::npos) << status;
}

TEST_F(CudaAttentionValidationTest, ParamsNotMatchingTheStorageAreRefused) {
  MOE_SKIP_WITHOUT_GPU();
  absl::Status status = Run(Params(8, 4, 64));  // storage has 2 kv heads
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("KV storage"), absl::string_view::npos)
      << status;
  status = Run(Params(8, 2, 128));  // storage has head_dim 64
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  AttentionParams bad_layer = Params(8, 2, 64);
  bad_layer.layer = 2;
  status = Run(bad_layer);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("layer 2"), absl::string_view::npos)
      << status;
}

TEST_F(CudaAttentionValidationTest, EmptyBatchEnqueuesNothing) {
  MOE_SKIP_WITHOUT_GPU();
  KvCacheShape shape{2, 2, 64, 16};
  absl::StatusOr<std::unique_ptr<DeviceKvStorage>> storage =
      DeviceKvStorage::Create(shape, 4);
  ASSERT_TRUE(storage.ok()) << storage.status();
  AttentionBatch batch;  // tokens == 0, no arrays
  EXPECT_TRUE(PagedAttention(batch, Params(8, 2, 64), **storage, nullptr).ok());
  batch.decode_only = true;
  EXPECT_TRUE(PagedAttention(batch, Params(8, 2, 64), **storage, nullptr).ok());
  EXPECT_TRUE(
      WriteKv(**storage, 0, nullptr, nullptr, 128, nullptr, 0, nullptr).ok());
}

TEST_F(CudaAttentionValidationTest, WriteKvRefusesBadLayerAndStride) {
  MOE_SKIP_WITHOUT_GPU();
  KvCacheShape shape{2, 2, 64, 16};
  absl::StatusOr<std::unique_ptr<DeviceKvStorage>> storage =
      DeviceKvStorage::Create(shape, 4);
  ASSERT_TRUE(storage.ok()) << storage.status();
  static float dummy[1];
  static int32_t slot[1];
  EXPECT_EQ(WriteKv(**storage, 2, dummy, dummy, 128, slot, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteKv(**storage, 0, dummy, dummy, 127, slot, 1, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DeviceKvStorageTest, LayoutMatchesTheHostCache) {
  MOE_SKIP_WITHOUT_GPU();
  KvCacheShape shape{3, 4, 32, 16};
  absl::StatusOr<std::unique_ptr<DeviceKvStorage>> storage =
      DeviceKvStorage::Create(shape, 10);
  ASSERT_TRUE(storage.ok()) << storage.status();
  EXPECT_EQ((*storage)->num_blocks(), 10);
  EXPECT_EQ((*storage)->block_bytes_per_layer(),
            2 * 16 * 4 * 32 * int64_t{sizeof(float)});
  const int64_t layer_floats =
      10 * (*storage)->block_bytes_per_layer() / int64_t{sizeof(float)};
  EXPECT_EQ((*storage)->layer_data(2) - (*storage)->layer_data(0),
            2 * layer_floats);
  // Zeroed at creation, as the host cache's rows are.
  absl::StatusOr<std::vector<float>> rows =
      ToHost((*storage)->layer_data(0), 3 * layer_floats);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_TRUE(std::all_of(rows->begin(), rows->end(),
                          [](float x) { return x == 0.0f; }));
}

TEST(DeviceKvStorageTest, TooLargeIsResourceExhaustedNamingTheBytes) {
  MOE_SKIP_WITHOUT_GPU();
  // 2 GiB per block x 2^20 blocks: 2 PiB, more than any device.
  KvCacheShape shape{64, 64, 256, 256};
  absl::StatusOr<std::unique_ptr<DeviceKvStorage>> storage =
      DeviceKvStorage::Create(shape, 1 << 20);
  ASSERT_FALSE(storage.ok());
  EXPECT_EQ(storage.status().code(), absl::StatusCode::kResourceExhausted)
      << storage.status();
  EXPECT_NE(storage.status().message().find(
                absl::StrCat(shape.BytesPerBlock() * (int64_t{1} << 20))),
            absl::string_view::npos)
      << storage.status();
  // The failure leaves no sticky error behind.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(DeviceKvStorageTest, NonPositiveShapeIsInvalid) {
  MOE_SKIP_WITHOUT_GPU();
  KvCacheShape shape{2, 0, 64, 16};
  EXPECT_EQ(DeviceKvStorage::Create(shape, 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  shape.num_kv_heads = 2;
  EXPECT_EQ(DeviceKvStorage::Create(shape, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::cuda
