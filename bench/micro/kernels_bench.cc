// CPU kernels on model-typical shapes (core/cpu/kernels.h, attention.h,
// core/expert_ffn.h). Bytes processed are what each call must move at least
// (weights read once, activations read and written), so the printed
// bytes_per_second of the BF16 MatMul rows is comparable with the memory
// bandwidth that moe-bench reports.
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "bench/micro/micro_util.h"
#include "benchmark/benchmark.h"
#include "core/cpu/attention.h"
#include "core/cpu/kernels.h"
#include "core/expert_ffn.h"
#include "core/kv_cache.h"
#include "core/model_weights.h"

namespace moe::microbench {
namespace {

// Mixtral-8x7B's expert up-projection: [14336, 4096] BF16, 117 MB, far past
// any cache, so every call streams the weight from memory.
constexpr int64_t kMatRows = 14336;  // n: output columns
constexpr int64_t kMatCols = 4096;   // k: the hidden size

// Mixtral-8x7B's attention: 32 query heads over 8 K/V heads of 128.
constexpr int kHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int kBlockSize = 16;

// Qwen3-30B-A3B's routed experts (hidden 2048, width 768), 8 per token:
// a decode step's tokens spread over 8 experts.
constexpr int64_t kFfnHidden = 2048;
constexpr int64_t kFfnWidth = 768;
constexpr int kFfnExperts = 8;

struct Bf16Matrix {
  std::vector<uint16_t> data;
  TensorView view;
};

const Bf16Matrix& MatMulWeight() {
  static const Bf16Matrix* w = [] {
    auto* m = new Bf16Matrix;
    m->data = RandomBf16(kMatRows * kMatCols, /*seed=*/11,
                         1.0f / std::sqrt(static_cast<float>(kMatCols)));
    m->view = Bf16View(m->data, {kMatRows, kMatCols});
    return m;
  }();
  return *w;
}

void RunMatMul(benchmark::State& state) {
  const int64_t m = state.range(0);
  const TensorView& w = MatMulWeight().view;
  const std::vector<float> x = RandomFloats(m * kMatCols, /*seed=*/12);
  std::vector<float> y(m * kMatRows);
  for (auto _ : state) {
    cpu::MatMul(x.data(), m, w, y.data(), &KernelPool());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(
      state.iterations() *
      static_cast<int64_t>(w.NumBytes() + (x.size() + y.size()) * 4));
  state.counters["rows"] = static_cast<double>(m);
  state.counters["FLOP"] =
      benchmark::Counter(2.0 * m * kMatRows * kMatCols,
                         benchmark::Counter::kIsIterationInvariantRate);
}

// y[m, 14336] = x[m, 4096] · W^T: m = 1 is a batch-1 decode GEMV (memory
// bound), 32 a decode batch where compute starts to matter.
void BM_MatMulBf16(benchmark::State& state) { RunMatMul(state); }
BENCHMARK(BM_MatMulBf16)
    ->Arg(1)
    ->Arg(8)
    ->Arg(32)
    ->Unit(benchmark::kMillisecond);

// The same through the portable path (what runs without AVX-512).
void BM_MatMulBf16Portable(benchmark::State& state) {
  const bool was = cpu::HasAvx512MatMul();
  cpu::SetAvx512MatMulEnabled(false);
  RunMatMul(state);
  cpu::SetAvx512MatMulEnabled(was);
}
BENCHMARK(BM_MatMulBf16Portable)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond);

// K/V rows for every position of every sequence, shared by all sequences.
const std::vector<float>& RandomKv(int64_t tokens) {
  static std::vector<float>* kv = new std::vector<float>();
  const size_t need = static_cast<size_t>(tokens) * kKvHeads * kHeadDim;
  if (kv->size() < need) *kv = RandomFloats(need, /*seed=*/21);
  return *kv;
}

// A one-layer cache holding `seqs` sequences of `context` tokens each,
// written with cpu::WriteKv.
struct FilledCache {
  std::unique_ptr<KvCache> cache;
  std::vector<std::vector<int32_t>> tables;  // [sequence]
};

absl::StatusOr<FilledCache> FillCache(int context, int seqs) {
  const KvCacheShape shape{/*num_layers=*/1, kKvHeads, kHeadDim, kBlockSize};
  const int64_t blocks_per_seq = (context + kBlockSize - 1) / kBlockSize;
  FilledCache filled;
  absl::StatusOr<std::unique_ptr<KvCache>> cache =
      KvCache::Create(shape, blocks_per_seq * seqs * shape.BytesPerBlock());
  if (!cache.ok()) return cache.status();
  filled.cache = std::move(*cache);
  const std::vector<float>& kv = RandomKv(context);
  for (int s = 0; s < seqs; ++s) {
    if (absl::Status st = filled.cache->AddSequence(s); !st.ok()) return st;
    if (absl::Status st = filled.cache->Append(s, context); !st.ok()) return st;
    filled.tables.push_back(filled.cache->BlockTable(s));
    cpu::WriteKv(*filled.cache, 0, filled.tables.back(), 0, context, kv.data(),
                 kv.data(), kKvHeads * kHeadDim);
  }
  return filled;
}

cpu::AttentionParams MixtralAttention() {
  cpu::AttentionParams p;
  p.num_heads = kHeads;
  p.num_kv_heads = kKvHeads;
  p.head_dim = kHeadDim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  return p;
}

// One decode step of `seqs` sequences (args: context tokens, sequences):
// each new token attends to its whole context in the paged cache. Bytes:
// the K and V rows read.
void BM_AttentionDecode(benchmark::State& state) {
  const int context = static_cast<int>(state.range(0));
  const int seqs = static_cast<int>(state.range(1));
  absl::StatusOr<FilledCache> filled = FillCache(context, seqs);
  if (!filled.ok()) {
    state.SkipWithError(filled.status().ToString().c_str());
    return;
  }
  const int64_t q_dim = kHeads * kHeadDim;
  const std::vector<float> q = RandomFloats(seqs * q_dim, /*seed=*/22);
  std::vector<float> out(seqs * q_dim);
  std::vector<cpu::AttentionSegment> segments(seqs);
  for (int s = 0; s < seqs; ++s) {
    segments[s] = {q.data() + s * q_dim,   q_dim,
                   out.data() + s * q_dim, q_dim,
                   /*tokens=*/1,           /*first_pos=*/context - 1,
                   filled->tables[s]};
  }
  const cpu::AttentionParams params = MixtralAttention();
  for (auto _ : state) {
    cpu::PagedAttention(segments, params, *filled->cache, &KernelPool());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * int64_t{seqs} * context * 2 *
                          kKvHeads * kHeadDim * int64_t{sizeof(float)});
  state.counters["tokens"] =
      benchmark::Counter(seqs, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionDecode)
    ->ArgNames({"context", "seqs"})
    ->Args({512, 1})
    ->Args({2048, 1})
    ->Args({2048, 8})
    ->Unit(benchmark::kMicrosecond);

// The attention of a 128-token prompt chunk (causal, from position 0), its
// K/V already in the cache.
void BM_AttentionPrefill(benchmark::State& state) {
  const int tokens = static_cast<int>(state.range(0));
  absl::StatusOr<FilledCache> filled = FillCache(tokens, 1);
  if (!filled.ok()) {
    state.SkipWithError(filled.status().ToString().c_str());
    return;
  }
  const int64_t q_dim = kHeads * kHeadDim;
  const std::vector<float> q = RandomFloats(tokens * q_dim, /*seed=*/23);
  std::vector<float> out(tokens * q_dim);
  const cpu::AttentionSegment segment{
      q.data(), q_dim,           out.data(),       q_dim,
      tokens,   /*first_pos=*/0, filled->tables[0]};
  const cpu::AttentionParams params = MixtralAttention();
  for (auto _ : state) {
    cpu::PagedAttention({&segment, 1}, params, *filled->cache, &KernelPool());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens"] =
      benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionPrefill)->Arg(128)->Unit(benchmark::kMicrosecond);

struct FfnExperts {
  std::vector<std::vector<uint16_t>> data;  // gate, up, down per expert
  std::vector<FfnWeights> weights;
};

const FfnExperts& Experts() {
  static const FfnExperts* experts = [] {
    auto* e = new FfnExperts;
    e->data.reserve(3 * kFfnExperts);
    for (int i = 0; i < kFfnExperts; ++i) {
      const uint32_t seed = 100 + 3 * i;
      const float in_scale = 1.0f / std::sqrt(static_cast<float>(kFfnHidden));
      const float down_scale = 1.0f / std::sqrt(static_cast<float>(kFfnWidth));
      e->data.push_back(RandomBf16(kFfnWidth * kFfnHidden, seed, in_scale));
      e->data.push_back(RandomBf16(kFfnWidth * kFfnHidden, seed + 1, in_scale));
      e->data.push_back(
          RandomBf16(kFfnHidden * kFfnWidth, seed + 2, down_scale));
    }
    for (int i = 0; i < kFfnExperts; ++i) {
      e->weights.push_back(
          {Bf16View(e->data[3 * i], {kFfnWidth, kFfnHidden}),
           Bf16View(e->data[3 * i + 1], {kFfnWidth, kFfnHidden}),
           Bf16View(e->data[3 * i + 2], {kFfnHidden, kFfnWidth})});
    }
    return e;
  }();
  return *experts;
}

// One MoE layer's routed FFNs on an expert server: 8 groups (experts) of
// `tokens` tokens each through GroupedFfnRunner (two pool dispatches).
// Bytes: the 8 experts' weights (75 MB) plus activations.
void BM_GroupedFfn(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const FfnExperts& experts = Experts();
  const std::vector<float> x =
      RandomFloats(kFfnExperts * tokens * kFfnHidden, /*seed=*/31);
  std::vector<float> out(x.size());
  std::vector<FfnGroup> groups;
  int64_t weight_bytes = 0;
  for (int i = 0; i < kFfnExperts; ++i) {
    const FfnWeights& w = experts.weights[i];
    groups.push_back({&w, x.data() + i * tokens * kFfnHidden, tokens,
                      out.data() + i * tokens * kFfnHidden});
    weight_bytes += w.gate.NumBytes() + w.up.NumBytes() + w.down.NumBytes();
  }
  GroupedFfnRunner runner;
  for (auto _ : state) {
    runner.Run(groups, &KernelPool());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(
      state.iterations() *
      (weight_bytes + static_cast<int64_t>(x.size() + out.size()) * 4));
  state.counters["tokens"] = benchmark::Counter(
      kFfnExperts * tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOP"] = benchmark::Counter(
      2.0 * 3 * kFfnExperts * tokens * kFfnHidden * kFfnWidth,
      benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_GroupedFfn)
    ->ArgName("tokens_per_expert")
    ->Arg(1)
    ->Arg(8)
    ->Arg(64)
    ->Unit(benchmark::kMicrosecond);

// RMSNorm of `tokens` hidden states of 4096, in place, BF16 weight.
void BM_RmsNorm(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const std::vector<uint16_t> weight = RandomBf16(kMatCols, /*seed=*/41, 1.0f);
  const TensorView w = Bf16View(weight, {kMatCols});
  std::vector<float> x = RandomFloats(tokens * kMatCols, /*seed=*/42);
  for (auto _ : state) {
    cpu::RmsNorm(x.data(), tokens, kMatCols, kMatCols, w, 1e-5f, x.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * tokens * kMatCols * 2 *
                          int64_t{sizeof(float)});
}
BENCHMARK(BM_RmsNorm)->Arg(1)->Arg(128)->Unit(benchmark::kMicrosecond);

// RoPE over the 32 query heads of `tokens` tokens, in place.
void BM_Rope(benchmark::State& state) {
  const int64_t tokens = state.range(0);
  const int64_t q_dim = kHeads * kHeadDim;
  std::vector<float> q = RandomFloats(tokens * q_dim, /*seed=*/43);
  std::vector<int32_t> positions(tokens);
  for (int64_t t = 0; t < tokens; ++t) positions[t] = static_cast<int32_t>(t);
  for (auto _ : state) {
    cpu::ApplyRope(q.data(), tokens, q_dim, kHeads, kHeadDim, positions.data(),
                   1e6);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * tokens * q_dim * 2 *
                          int64_t{sizeof(float)});
}
BENCHMARK(BM_Rope)->Arg(1)->Arg(128)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moe::microbench
