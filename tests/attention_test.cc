// Tests of core/cpu/attention.h: WriteKv places rows where the cache says,
// and PagedAttention over interleaved, non-contiguous block tables equals a
// plain causal grouped-query attention over contiguous K/V.
#include "core/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/kv_cache.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/kernel_test_util.h"

namespace moe::cpu {
namespace {

using ::moe::testing::RandomValues;

constexpr float kSentinel = -777.25f;
constexpr int kLayers = 2;
constexpr int kLayer = 1;  // the layer attended; layer 0 holds decoys
constexpr int kHeads = 4;
constexpr int kHeadDim = 8;

// One sequence of the batch: `history` cached tokens, then `tokens` new ones.
struct SeqSpec {
  int history;
  int tokens;
};

struct SeqData {
  SeqSpec spec;
  KvCache::SeqId id;
  std::vector<float> k, v;  // [history + tokens, kv_dim], contiguous
  std::vector<float> q;     // [tokens, ldq]
  std::vector<float> out;   // [tokens, ldo]
  std::vector<int32_t> table;
};

// Plain causal GQA for one sequence's new tokens: out[t, h] for p =
// history + t over key positions [start, p].
std::vector<double> ReferenceAttention(const SeqData& s, int kv_heads,
                                       int64_t ldq, float scale, int window) {
  const int group = kHeads / kv_heads;
  const int kv_dim = kv_heads * kHeadDim;
  std::vector<double> out(s.spec.tokens * kHeads * kHeadDim, 0.0);
  for (int t = 0; t < s.spec.tokens; ++t) {
    const int p = s.spec.history + t;
    const int start = window > 0 ? std::max(0, p - window + 1) : 0;
    for (int h = 0; h < kHeads; ++h) {
      const int kvh = h / group;
      const float* q = s.q.data() + t * ldq + h * kHeadDim;
      std::vector<double> w(p - start + 1);
      double max = -INFINITY;
      for (int j = start; j <= p; ++j) {
        double dot = 0;
        const float* k = s.k.data() + j * kv_dim + kvh * kHeadDim;
        for (int i = 0; i < kHeadDim; ++i) dot += double{q[i]} * k[i];
        w[j - start] = dot * scale;
        max = std::max(max, w[j - start]);
      }
      double sum = 0;
      for (double& x : w) sum += x = std::exp(x - max);
      for (int j = start; j <= p; ++j) {
        const float* v = s.v.data() + j * kv_dim + kvh * kHeadDim;
        for (int i = 0; i < kHeadDim; ++i) {
          out[(t * kHeads + h) * kHeadDim + i] += w[j - start] / sum * v[i];
        }
      }
    }
  }
  return out;
}

// (block_size, sliding_window, kv_heads, threads)
using AttentionParam = std::tuple<int, int, int, int>;

class PagedAttentionTest : public ::testing::TestWithParam<AttentionParam> {
 protected:
  int block_size() const { return std::get<0>(GetParam()); }
  int window() const { return std::get<1>(GetParam()); }
  int kv_heads() const { return std::get<2>(GetParam()); }
  int threads() const { return std::get<3>(GetParam()); }
  int kv_dim() const { return kv_heads() * kHeadDim; }

  // Builds the cache, allocates blocks round-robin one token at a time (so
  // every sequence's blocks interleave with the others'), and writes K/V
  // of both layers through WriteKv in two pieces per sequence.
  void Build(const std::vector<SeqSpec>& specs) {
    KvCacheShape shape;
    shape.num_layers = kLayers;
    shape.num_kv_heads = kv_heads();
    shape.head_dim = kHeadDim;
    shape.block_size = block_size();
    int blocks = 0;
    for (const SeqSpec& s : specs) {
      blocks += (s.history + s.tokens + block_size() - 1) / block_size();
    }
    absl::StatusOr<std::unique_ptr<KvCache>> cache =
        KvCache::Create(shape, int64_t{blocks + 3} * shape.BytesPerBlock());
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = std::move(*cache);

    seqs_.clear();
    for (size_t i = 0; i < specs.size(); ++i) {
      SeqData s;
      s.spec = specs[i];
      s.id = 100 + i;
      ASSERT_TRUE(cache_->AddSequence(s.id).ok());
      seqs_.push_back(std::move(s));
    }
    for (bool grew = true; grew;) {
      grew = false;
      for (SeqData& s : seqs_) {
        if (cache_->NumTokens(s.id) < s.spec.history + s.spec.tokens) {
          ASSERT_TRUE(cache_->Append(s.id, 1).ok());
          grew = true;
        }
      }
    }
    const int64_t ld = kv_dim() + 2;  // strided K/V rows
    for (SeqData& s : seqs_) {
      s.table = cache_->BlockTable(s.id);
      const int total = s.spec.history + s.spec.tokens;
      s.k = RandomValues(int64_t{total} * kv_dim(), rng_, -1.5f, 1.5f);
      s.v = RandomValues(int64_t{total} * kv_dim(), rng_);
      for (int layer = 0; layer < kLayers; ++layer) {
        // Layer 0 gets different values: reading it would be caught.
        std::vector<float> ks(int64_t{total} * ld, 1e3f),
            vs(int64_t{total} * ld, 1e3f);
        for (int p = 0; p < total; ++p) {
          for (int i = 0; i < kv_dim(); ++i) {
            const float sign = layer == kLayer ? 1.0f : -1.0f;
            ks[p * ld + i] = sign * s.k[p * kv_dim() + i];
            vs[p * ld + i] =
                sign * s.v[p * kv_dim() + i] + (layer == kLayer ? 0 : 5);
          }
        }
        // History first, then the new tokens (first_pos != 0).
        WriteKv(*cache_, layer, s.table, 0, s.spec.history, ks.data(),
                vs.data(), ld);
        WriteKv(*cache_, layer, s.table, s.spec.history, s.spec.tokens,
                ks.data() + s.spec.history * ld,
                vs.data() + s.spec.history * ld, ld);
      }
      s.q = RandomValues(int64_t{s.spec.tokens} * ldq(), rng_, -2.0f, 2.0f);
      s.out.assign(int64_t{s.spec.tokens} * ldo(), kSentinel);
    }
  }

  int64_t ldq() const { return kHeads * kHeadDim + 3; }
  int64_t ldo() const { return kHeads * kHeadDim + 1; }

  void RunAndCheck(float scale) {
    std::vector<AttentionSegment> segments;
    for (SeqData& s : seqs_) {
      AttentionSegment seg;
      seg.q = s.q.data();
      seg.ldq = ldq();
      seg.out = s.out.data();
      seg.ldo = ldo();
      seg.tokens = s.spec.tokens;
      seg.first_pos = s.spec.history;
      seg.block_table = s.table;
      segments.push_back(seg);
    }
    AttentionParams params;
    params.layer = kLayer;
    params.num_heads = kHeads;
    params.num_kv_heads = kv_heads();
    params.head_dim = kHeadDim;
    params.scale = scale;
    params.sliding_window = window();
    ThreadPool pool(threads());
    PagedAttention(segments, params, *cache_, &pool);

    for (const SeqData& s : seqs_) {
      SCOPED_TRACE(
          absl::StrCat("history ", s.spec.history, " tokens ", s.spec.tokens));
      const std::vector<double> want =
          ReferenceAttention(s, kv_heads(), ldq(), scale, window());
      for (int t = 0; t < s.spec.tokens; ++t) {
        for (int c = 0; c < kHeads * kHeadDim; ++c) {
          ASSERT_NEAR(s.out[t * ldo() + c], want[t * kHeads * kHeadDim + c],
                      2e-5)
              << "token " << t << " head " << c / kHeadDim << " dim "
              << c % kHeadDim;
        }
        ASSERT_EQ(s.out[t * ldo() + kHeads * kHeadDim], kSentinel) << "padding";
      }
    }
  }

  std::unique_ptr<KvCache> cache_;
  std::vector<SeqData> seqs_;
  std::mt19937 rng_{31};
};

TEST_P(PagedAttentionTest, WriteKvPlacesRowsByBlockTable) {
  Build({{0, 5}, {20, 1}, {13, 7}});
  for (const SeqData& s : seqs_) {
    for (int p = 0; p < s.spec.history + s.spec.tokens; ++p) {
      const int32_t block = s.table[p / block_size()];
      const int slot = p % block_size();
      const float* k = cache_->KRow(kLayer, block, slot);
      const float* v = cache_->VRow(kLayer, block, slot);
      for (int i = 0; i < kv_dim(); ++i) {
        ASSERT_EQ(k[i], s.k[p * kv_dim() + i]) << "pos " << p;
        ASSERT_EQ(v[i], s.v[p * kv_dim() + i]) << "pos " << p;
      }
      ASSERT_EQ(cache_->KRow(0, block, slot)[0], -s.k[p * kv_dim()]);
    }
  }
}

TEST_P(PagedAttentionTest, MixedBatchMatchesContiguousAttention) {
  // A prefill from 0, a decode step, a chunk across block boundaries, a
  // single first token, and a short chunk after a long history.
  Build({{0, 5}, {20, 1}, {13, 7}, {0, 1}, {33, 3}});
  RunAndCheck(1.0f / std::sqrt(static_cast<float>(kHeadDim)));
}

TEST_P(PagedAttentionTest, OtherScale) {
  Build({{3, 4}, {17, 2}});
  RunAndCheck(0.3f);
}

TEST_P(PagedAttentionTest, LongPrefill) {
  Build({{0, 40}, {9, 1}});
  RunAndCheck(1.0f / std::sqrt(static_cast<float>(kHeadDim)));
}

std::string AttentionParamName(
    const ::testing::TestParamInfo<AttentionParam>& info) {
  return absl::StrCat("block", std::get<0>(info.param), "_window",
                      std::get<1>(info.param), "_kv", std::get<2>(info.param),
                      "_threads", std::get<3>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Layouts, PagedAttentionTest,
                         ::testing::Combine(::testing::Values(1, 4, 16),
                                            ::testing::Values(0, 5),
                                            ::testing::Values(1, 2, 4),
                                            ::testing::Values(1, 3)),
                         AttentionParamName);

}  // namespace
}  // namespace moe::cpu
