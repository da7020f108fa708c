// Prefix caching in core/kv_cache.h: chained block hashes, sharing cached
// blocks between sequences, holders, and eviction of the least recently
// released cached blocks when the pool runs out.
#include <memory>
#include <vector>

#include "core/kv_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::ElementsAreArray;

// 1 layer, 1 head of 2, blocks of 4 tokens; 8 blocks.
std::unique_ptr<KvCache> SmallCache() {
  KvCacheShape shape{1, 1, 2, 4};
  return *KvCache::Create(shape, 8 * shape.BytesPerBlock());
}

std::vector<int32_t> Tokens(int n, int offset = 0) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = 100 + offset + i;
  return t;
}

TEST(PrefixBlockHashesTest, ChainedOverFullBlocksOnly) {
  const std::vector<int32_t> a = Tokens(10);
  const std::vector<uint64_t> h = PrefixBlockHashes(a, 4);
  ASSERT_EQ(h.size(), 2u);  // the last 2 tokens are no full block
  EXPECT_NE(h[0], h[1]);
  // A longer prompt with the same start has the same leading hashes.
  const std::vector<uint64_t> longer = PrefixBlockHashes(Tokens(16), 4);
  ASSERT_EQ(longer.size(), 4u);
  EXPECT_EQ(longer[0], h[0]);
  EXPECT_EQ(longer[1], h[1]);
  // A different first block changes every later hash too.
  std::vector<int32_t> b = a;
  b[0] = 7;
  const std::vector<uint64_t> hb = PrefixBlockHashes(b, 4);
  EXPECT_NE(hb[0], h[0]);
  EXPECT_NE(hb[1], h[1]);
  // The block size is part of the hash.
  EXPECT_NE(PrefixBlockHashes(Tokens(8), 8)[0], PrefixBlockHashes(Tokens(8), 4)[1]);
  EXPECT_TRUE(PrefixBlockHashes(Tokens(3), 4).empty());
  EXPECT_TRUE(PrefixBlockHashes(Tokens(8), 0).empty());
}

TEST(PrefixCacheTest, ARegisteredPrefixIsSharedAndStaysCachedAfterRelease) {
  std::unique_ptr<KvCache> cache = SmallCache();
  const std::vector<uint64_t> h = PrefixBlockHashes(Tokens(12), 4);  // 3 blocks
  ASSERT_TRUE(cache->AddSequence(1).ok());
  ASSERT_TRUE(cache->Append(1, 14).ok());  // 4 blocks
  ASSERT_TRUE(cache->RegisterPrefix(1, h).ok());
  const std::vector<int32_t> first = cache->BlockTable(1);

  // A second sequence with the same 12-token start shares 3 blocks.
  absl::StatusOr<int> matched = cache->AddSequenceWithPrefix(2, h);
  ASSERT_TRUE(matched.ok());
  EXPECT_EQ(*matched, 12);
  EXPECT_EQ(cache->NumTokens(2), 12);
  EXPECT_THAT(cache->BlockTable(2),
              ElementsAreArray(first.begin(), first.begin() + 3));
  EXPECT_EQ(cache->num_free_blocks(), 4);  // 8 - 4 held
  ASSERT_TRUE(cache->Append(2, 5).ok());   // 17 tokens: 2 new blocks
  EXPECT_EQ(cache->num_free_blocks(), 2);

  // Releasing the first keeps the shared blocks with the second.
  cache->FreeSequence(1);
  EXPECT_EQ(cache->num_free_blocks(), 3);  // only the unregistered 4th block
  EXPECT_EQ(cache->num_cached_blocks(), 0);
  // Releasing the second leaves the 3 registered blocks cached but free.
  cache->FreeSequence(2);
  EXPECT_EQ(cache->num_free_blocks(), 8);
  EXPECT_EQ(cache->num_cached_blocks(), 3);
  EXPECT_EQ(cache->usage(), 0.0);
  EXPECT_EQ(cache->CachedPrefixBlocks(h), 3);
  // A prompt sharing only the first block matches one block.
  std::vector<int32_t> other = Tokens(12);
  other[6] = 1;
  absl::StatusOr<int> partial =
      cache->AddSequenceWithPrefix(3, PrefixBlockHashes(other, 4));
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ(*partial, 4);
  EXPECT_EQ(cache->BlockTable(3)[0], first[0]);
}

TEST(PrefixCacheTest, CachedBlocksAreEvictedLeastRecentlyReleasedFirst) {
  std::unique_ptr<KvCache> cache = SmallCache();
  const std::vector<uint64_t> a = PrefixBlockHashes(Tokens(16, 0), 4);
  const std::vector<uint64_t> b = PrefixBlockHashes(Tokens(16, 1000), 4);
  for (auto [seq, hashes] : {std::pair{1, &a}, std::pair{2, &b}}) {
    ASSERT_TRUE(cache->AddSequence(seq).ok());
    ASSERT_TRUE(cache->Append(seq, 16).ok());
    ASSERT_TRUE(cache->RegisterPrefix(seq, *hashes).ok());
  }
  cache->FreeSequence(1);  // released first: evicted first
  cache->FreeSequence(2);
  EXPECT_EQ(cache->num_cached_blocks(), 8);
  EXPECT_EQ(cache->num_free_blocks(), 8);
  // Six new blocks: all four of a's, then b's two last ones.
  ASSERT_TRUE(cache->AddSequence(3).ok());
  ASSERT_TRUE(cache->Append(3, 24).ok());
  EXPECT_EQ(cache->CachedPrefixBlocks(a), 0);
  EXPECT_EQ(cache->CachedPrefixBlocks(b), 2);
  EXPECT_EQ(cache->num_cached_blocks(), 2);
  // A full pool is still all-or-nothing.
  EXPECT_EQ(cache->Append(3, 12).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache->CachedPrefixBlocks(b), 2);
}

TEST(PrefixCacheTest, RegisteringNeedsFullBlocksAndAKnownSequence) {
  std::unique_ptr<KvCache> cache = SmallCache();
  const std::vector<uint64_t> h = PrefixBlockHashes(Tokens(8), 4);
  EXPECT_EQ(cache->RegisterPrefix(5, h).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(cache->AddSequence(5).ok());
  ASSERT_TRUE(cache->Append(5, 7).ok());  // one full block only
  EXPECT_EQ(cache->RegisterPrefix(5, h).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(cache->RegisterPrefix(5, absl::MakeConstSpan(h).subspan(0, 1)).ok());
  EXPECT_EQ(cache->AddSequenceWithPrefix(5, h).status().code(),
            absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace moe
