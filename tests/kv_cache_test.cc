// Tests of core/kv_cache.h: block accounting, all-or-nothing growth,
// storage layout without aliasing, and thread-safe allocation.
#include "core/kv_cache.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// 2 layers, 2 kv heads of 4, blocks of 4 tokens: a block is
// 2 * 2 * 4 * 2 * 4 * 4 bytes = 512 bytes over all layers.
KvCacheShape SmallShape() {
  KvCacheShape s;
  s.num_layers = 2;
  s.num_kv_heads = 2;
  s.head_dim = 4;
  s.block_size = 4;
  return s;
}

std::unique_ptr<KvCache> MakeCache(const KvCacheShape& shape, int64_t bytes) {
  absl::StatusOr<std::unique_ptr<KvCache>> cache =
      KvCache::Create(shape, bytes);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return cache.ok() ? std::move(*cache) : nullptr;
}

TEST(KvCacheTest, BytesPerBlock) {
  EXPECT_EQ(SmallShape().BytesPerBlock(), 512);
  KvCacheShape big;
  big.num_layers = 48;
  big.num_kv_heads = 8;
  big.head_dim = 128;
  big.block_size = 16;
  EXPECT_EQ(big.BytesPerBlock(), int64_t{48} * 2 * 16 * 8 * 128 * 4);
}

TEST(KvCacheTest, CapacityFromBudget) {
  const KvCacheShape shape = SmallShape();
  for (int64_t bytes : {512, 513, 1023, 1024, 512 * 10 + 100, 512 * 1000}) {
    std::unique_ptr<KvCache> cache = MakeCache(shape, bytes);
    ASSERT_NE(cache, nullptr);
    EXPECT_EQ(cache->num_blocks(), bytes / 512) << bytes;
    EXPECT_EQ(cache->num_free_blocks(), bytes / 512) << bytes;
    EXPECT_EQ(cache->usage(), 0.0);
    EXPECT_EQ(cache->shape().block_size, 4);
    EXPECT_EQ(cache->BlockBytesPerLayer(), 2 * 4 * 8 * 4);
  }
}

TEST(KvCacheTest, InvalidShapesAndBudgets) {
  for (int field = 0; field < 4; ++field) {
    for (int bad : {0, -1}) {
      KvCacheShape s = SmallShape();
      int* f[] = {&s.num_layers, &s.num_kv_heads, &s.head_dim, &s.block_size};
      *f[field] = bad;
      absl::StatusOr<std::unique_ptr<KvCache>> cache =
          KvCache::Create(s, 1 << 20);
      ASSERT_FALSE(cache.ok()) << "field " << field << " = " << bad;
      EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  for (int64_t bytes : {int64_t{511}, int64_t{0}, int64_t{-1024}}) {
    absl::StatusOr<std::unique_ptr<KvCache>> cache =
        KvCache::Create(SmallShape(), bytes);
    ASSERT_FALSE(cache.ok()) << bytes;
    EXPECT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(KvCacheTest, BlocksFor) {
  std::unique_ptr<KvCache> cache = MakeCache(SmallShape(), 512 * 4);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->BlocksFor(0), 0);
  EXPECT_EQ(cache->BlocksFor(1), 1);
  EXPECT_EQ(cache->BlocksFor(4), 1);
  EXPECT_EQ(cache->BlocksFor(5), 2);
  EXPECT_EQ(cache->BlocksFor(8), 2);
  EXPECT_EQ(cache->BlocksFor(9), 3);
}

TEST(KvCacheTest, AppendAllocatesBlocksOnlyAtBoundaries) {
  std::unique_ptr<KvCache> cache = MakeCache(SmallShape(), 512 * 10);
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(cache->AddSequence(7).ok());
  EXPECT_TRUE(cache->HasSequence(7));
  EXPECT_EQ(cache->NumTokens(7), 0);
  EXPECT_THAT(cache->BlockTable(7), IsEmpty());

  struct Step {
    int append;
    int tokens_after;
    size_t blocks_after;
  };
  // Block size 4.
  const Step steps[] = {{0, 0, 0},  {1, 1, 1}, {3, 4, 1},  {1, 5, 2},
                        {2, 7, 2},  {1, 8, 2}, {9, 17, 5}, {0, 17, 5},
                        {3, 20, 5}, {1, 21, 6}};
  std::vector<int32_t> previous;
  for (const Step& s : steps) {
    SCOPED_TRACE(s.tokens_after);
    ASSERT_TRUE(cache->Append(7, s.append).ok());
    EXPECT_EQ(cache->NumTokens(7), s.tokens_after);
    const std::vector<int32_t> table = cache->BlockTable(7);
    EXPECT_EQ(table.size(), s.blocks_after);
    // Growth keeps the blocks already held, in order.
    ASSERT_GE(table.size(), previous.size());
    EXPECT_TRUE(std::equal(previous.begin(), previous.end(), table.begin()));
    previous = table;
    EXPECT_EQ(cache->num_free_blocks(), 10 - static_cast<int>(s.blocks_after));
  }
  // Distinct, valid block ids.
  std::set<int32_t> ids(previous.begin(), previous.end());
  EXPECT_EQ(ids.size(), previous.size());
  for (int32_t b : previous) {
    EXPECT_GE(b, 0);
    EXPECT_LT(b, 10);
  }
}

TEST(KvCacheTest, ResourceExhaustedLeavesStateUnchanged) {
  std::unique_ptr<KvCache> cache = MakeCache(SmallShape(), 512 * 10);
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(cache->AddSequence(1).ok());
  ASSERT_TRUE(cache->AddSequence(2).ok());
  ASSERT_TRUE(cache->Append(1, 30).ok());  // 8 blocks, 2 free slots in the last
  ASSERT_TRUE(cache->Append(2, 3).ok());   // 1 block, 1 free slot
  EXPECT_EQ(cache->num_free_blocks(), 1);
  const std::vector<int32_t> table1 = cache->BlockTable(1);
  const std::vector<int32_t> table2 = cache->BlockTable(2);

  // 41 tokens need 11 blocks: 3 more, with 1 free.
  absl::Status s = cache->Append(1, 11);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  s = cache->Append(2, 10);  // 13 tokens -> 4 blocks, 3 more
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(cache->NumTokens(1), 30);
  EXPECT_EQ(cache->NumTokens(2), 3);
  EXPECT_EQ(cache->BlockTable(1), table1);
  EXPECT_EQ(cache->BlockTable(2), table2);
  EXPECT_EQ(cache->num_free_blocks(), 1);

  // What still fits does fit: the free slots, then exactly the last block.
  ASSERT_TRUE(cache->Append(1, 2).ok());  // 32 tokens, no new block
  EXPECT_EQ(cache->num_free_blocks(), 1);
  ASSERT_TRUE(cache->Append(2, 1).ok());  // 4 tokens, no new block
  EXPECT_EQ(cache->num_free_blocks(), 1);
  ASSERT_TRUE(cache->Append(2, 4).ok());  // 8 tokens, the last block
  EXPECT_EQ(cache->num_free_blocks(), 0);
  EXPECT_EQ(cache->usage(), 1.0);
  s = cache->Append(1, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(cache->NumTokens(1), 32);
  // Appending nothing always succeeds.
  EXPECT_TRUE(cache->Append(1, 0).ok());
}

TEST(KvCacheTest, NegativeAppendIsRejectedWithoutChange) {
  std::unique_ptr<KvCache> cache = MakeCache(SmallShape(), 512 * 4);
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(cache->AddSequence(1).ok());
  ASSERT_TRUE(cache->Append(1, 5).ok());
  EXPECT_FALSE(cache->Append(1, -5).ok());
  EXPECT_EQ(cache->NumTokens(1), 5);
  EXPECT_EQ(cache->BlockTable(1).size(), 2u);
  EXPECT_EQ(cache->num_free_blocks(), 2);
}

TEST(KvCacheTest, FreeSequenceReturnsBlocks) {
  std::unique_ptr<KvCache> cache = MakeCache(SmallShape(), 512 * 10);
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(cache->AddSequence(1).ok());
  ASSERT_TRUE(cache->AddSequence(2).ok());
  ASSERT_TRUE(cache->Append(1, 13).ok());  // 4 blocks
  ASSERT_TRUE(cache->Append(2, 8).ok());   // 2 blocks
  EXPECT_EQ(cache->num_free_blocks(), 4);
  EXPECT_DOUBLE_EQ(cache->usage(), 0.6);
  cache->FreeSequence(1);
  EXPECT_FALSE(cache->HasSequence(1));
  EXPECT_TRUE(cache->HasSequence(2));
  EXPECT_EQ(cache->num_free_blocks(), 8);
  EXPECT_DOUBLE_EQ(cache->usage(), 0.2);
  // The freed blocks can be used again, all of them.
  ASSERT_TRUE(cache->AddSequence(3).ok());
  ASSERT_TRUE(cache->Append(3, 32).ok());
  EXPECT_EQ(cache->num_free_blocks(), 0);
  std::set<int32_t> all;
  for (int32_t b : cache->BlockTable(2)) all.insert(b);
  for (int32_t b : cache->BlockTable(3)) all.insert(b);
  EXPECT_EQ(all.size(), 10u);
  // Unknown ids and double frees are ignored.
  cache->FreeSequence(12345);
  cache->FreeSequence(1);
  EXPECT_EQ(cache->num_free_blocks(), 0);
  cache->FreeSequence(2);
  cache->FreeSequence(3);
  EXPECT_EQ(cache->num_free_blocks(), 10);
  EXPECT_EQ(cache->usage(), 0.0);
  // A freed id can be registered again, empty.
  ASSERT_TRUE(cache->AddSequence(1).ok());
  EXPECT_EQ(cache->NumTokens(1), 0);
  EXPECT_THAT(cache->BlockTable(1), IsEmpty());
}

TEST(KvCacheTest, UnknownAndDuplicateSequences) {
  std::unique_ptr<KvCache> cache = MakeCache(SmallShape(), 512 * 4);
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->Append(99, 1).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(cache->HasSequence(99));
  EXPECT_EQ(cache->num_free_blocks(), 4);
  ASSERT_TRUE(cache->AddSequence(5).ok());
  ASSERT_TRUE(cache->Append(5, 6).ok());
  EXPECT_EQ(cache->AddSequence(5).code(), absl::StatusCode::kAlreadyExists);
  // The failed AddSequence did not reset the existing one.
  EXPECT_EQ(cache->NumTokens(5), 6);
  EXPECT_EQ(cache->BlockTable(5).size(), 2u);
  // Negative ids are ordinary ids.
  EXPECT_TRUE(cache->AddSequence(-5).ok());
  EXPECT_TRUE(cache->HasSequence(-5));
}

TEST(KvCacheTest, UsageStaysWithinZeroAndOne) {
  std::unique_ptr<KvCache> cache = MakeCache(SmallShape(), 512 * 7);
  ASSERT_NE(cache, nullptr);
  std::mt19937 rng(5);
  std::vector<KvCache::SeqId> live;
  for (int i = 0; i < 500; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      const KvCache::SeqId id = i;
      ASSERT_TRUE(cache->AddSequence(id).ok());
      live.push_back(id);
      (void)cache->Append(id, static_cast<int>(rng() % 9));
    } else {
      const size_t pick = rng() % live.size();
      cache->FreeSequence(live[pick]);
      live.erase(live.begin() + pick);
    }
    const double u = cache->usage();
    ASSERT_GE(u, 0.0);
    ASSERT_LE(u, 1.0);
    int used = 0;
    for (KvCache::SeqId id : live) used += cache->BlockTable(id).size();
    ASSERT_EQ(used, 7 - cache->num_free_blocks());
    ASSERT_DOUBLE_EQ(u, used / 7.0);
  }
}

// Every (layer, block, slot) K and V row gets a distinct pattern; reading
// all of them back proves that no two rows share storage.
TEST(KvCacheTest, RowsOfDifferentBlocksAndLayersDoNotAlias) {
  const KvCacheShape shape = SmallShape();
  std::unique_ptr<KvCache> cache = MakeCache(shape, 512 * 6);
  ASSERT_NE(cache, nullptr);
  const int row = shape.num_kv_heads * shape.head_dim;
  auto value = [&](int layer, int block, int slot, int kv, int i) {
    return static_cast<float>((((layer * 8 + block) * 8 + slot) * 2 + kv) * 16 +
                              i);
  };
  for (int l = 0; l < shape.num_layers; ++l) {
    for (int b = 0; b < cache->num_blocks(); ++b) {
      for (int s = 0; s < shape.block_size; ++s) {
        float* k = cache->KRow(l, b, s);
        float* v = cache->VRow(l, b, s);
        for (int i = 0; i < row; ++i) {
          k[i] = value(l, b, s, 0, i);
          v[i] = value(l, b, s, 1, i);
        }
      }
    }
  }
  for (int l = 0; l < shape.num_layers; ++l) {
    for (int b = 0; b < cache->num_blocks(); ++b) {
      for (int s = 0; s < shape.block_size; ++s) {
        const KvCache& c = *cache;
        const float* k = c.KRow(l, b, s);
        const float* v = c.VRow(l, b, s);
        for (int i = 0; i < row; ++i) {
          ASSERT_EQ(k[i], value(l, b, s, 0, i)) << l << " " << b << " " << s;
          ASSERT_EQ(v[i], value(l, b, s, 1, i)) << l << " " << b << " " << s;
        }
      }
    }
  }
}

TEST(KvCacheTest, BlockDataIsOneContiguousRangePerLayer) {
  const KvCacheShape shape = SmallShape();
  std::unique_ptr<KvCache> cache = MakeCache(shape, 512 * 3);
  ASSERT_NE(cache, nullptr);
  const int64_t row = shape.num_kv_heads * shape.head_dim;
  const int64_t floats = cache->BlockBytesPerLayer() / sizeof(float);
  EXPECT_EQ(floats, 2 * shape.block_size * row);
  for (int l = 0; l < shape.num_layers; ++l) {
    for (int b = 0; b < cache->num_blocks(); ++b) {
      const float* begin = cache->BlockData(l, b);
      const float* end = begin + floats;
      EXPECT_EQ(cache->KRow(l, b, 0), begin);
      for (int s = 0; s < shape.block_size; ++s) {
        EXPECT_GE(cache->KRow(l, b, s), begin);
        EXPECT_LE(cache->KRow(l, b, s) + row, end);
        EXPECT_GE(cache->VRow(l, b, s), begin);
        EXPECT_LE(cache->VRow(l, b, s) + row, end);
      }
    }
  }
}

TEST(KvCacheTest, ConcurrentAppendAndFreeKeepAccountingExact) {
  const int kBlocks = 64;
  std::unique_ptr<KvCache> cache = MakeCache(SmallShape(), 512 * kBlocks);
  ASSERT_NE(cache, nullptr);
  constexpr int kThreads = 4;
  constexpr int kIterations = 3000;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  // Each thread owns the ids t, t + kThreads, ... and keeps its own count of
  // the tokens each of them holds.
  std::vector<std::vector<int>> tokens(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      std::vector<int>& mine = tokens[t];
      mine.assign(6, -1);  // -1: not registered
      for (int i = 0; i < kIterations; ++i) {
        const int slot = rng() % mine.size();
        const KvCache::SeqId id = slot * kThreads + t;
        if (mine[slot] < 0) {
          if (!cache->AddSequence(id).ok()) ++errors;
          mine[slot] = 0;
        } else if (rng() % 4 == 0) {
          cache->FreeSequence(id);
          mine[slot] = -1;
        } else {
          const int n = rng() % 11;
          const absl::Status s = cache->Append(id, n);
          if (s.ok()) {
            mine[slot] += n;
          } else if (s.code() != absl::StatusCode::kResourceExhausted) {
            ++errors;
          }
          if (cache->NumTokens(id) != mine[slot]) ++errors;
          if (cache->BlockTable(id).size() !=
              static_cast<size_t>(cache->BlocksFor(mine[slot]))) {
            ++errors;
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);

  // The live sequences hold disjoint blocks that, with the free list,
  // account for the whole pool.
  std::set<int32_t> held;
  int held_count = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (size_t slot = 0; slot < tokens[t].size(); ++slot) {
      if (tokens[t][slot] < 0) continue;
      const KvCache::SeqId id = slot * kThreads + t;
      const std::vector<int32_t> table = cache->BlockTable(id);
      EXPECT_EQ(static_cast<int>(table.size()),
                cache->BlocksFor(tokens[t][slot]));
      held.insert(table.begin(), table.end());
      held_count += table.size();
    }
  }
  EXPECT_EQ(static_cast<int>(held.size()), held_count);
  EXPECT_EQ(held_count + cache->num_free_blocks(), kBlocks);
  for (int t = 0; t < kThreads; ++t) {
    for (size_t slot = 0; slot < tokens[t].size(); ++slot) {
      cache->FreeSequence(slot * kThreads + t);
    }
  }
  EXPECT_EQ(cache->num_free_blocks(), kBlocks);
  EXPECT_EQ(cache->usage(), 0.0);
}

}  // namespace
}  // namespace moe
