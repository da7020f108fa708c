#include "core/kv_cache.h"

#include <sys/mman.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

// 64-bit mixing (the SplitMix64 finaliser).
uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<uint64_t> PrefixBlockHashes(absl::Span<const int32_t> tokens,
                                        int block_size) {
  std::vector<uint64_t> hashes;
  if (block_size <= 0) return hashes;
  const size_t full = tokens.size() / static_cast<size_t>(block_size);
  hashes.reserve(full);
  uint64_t h = Mix(0x6D6F652D6B76ull ^ static_cast<uint64_t>(block_size));
  for (size_t b = 0; b < full; ++b) {
    for (int i = 0; i < block_size; ++i) {
      const uint32_t token = static_cast<uint32_t>(tokens[b * block_size + i]);
      h = Mix(h ^ (0x9E3779B97F4A7C15ull + token));
    }
    hashes.push_back(h);
  }
  return hashes;
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(
    const KvCacheShape& shape, int64_t memory_bytes) {
  if (shape.num_layers <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.block_size <= 0 || shape.planes < 1 || shape.planes > 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache shape must be positive: layers=", shape.num_layers,
        " kv_heads=", shape.num_kv_heads, " head_dim=", shape.head_dim,
        " block_size=", shape.block_size, " planes=", shape.planes));
  }
  const int64_t per_block = shape.BytesPerBlock();
  const int64_t blocks = memory_bytes / per_block;
  if (blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache budget of ", memory_bytes, " bytes is below one block (",
        per_block, " bytes)"));
  }
  if (blocks > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache budget of ", memory_bytes, " bytes is too large"));
  }
  std::unique_ptr<KvCache> cache(new KvCache(shape, static_cast<int>(blocks)));
  cache->storage_bytes_ = static_cast<size_t>(blocks * per_block);
  void* mem = ::mmap(nullptr, cache->storage_bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot reserve ", cache->storage_bytes_, " bytes for the KV cache"));
  }
  cache->storage_ = static_cast<float*>(mem);
  return cache;
}

KvCache::KvCache(const KvCacheShape& shape, int num_blocks)
    : shape_(shape),
      num_blocks_(num_blocks),
      row_floats_(int64_t{shape.num_kv_heads} * shape.head_dim),
      layer_floats_(int64_t{num_blocks} * shape.planes * shape.block_size *
                    row_floats_) {
  free_blocks_.reserve(num_blocks);
  // Handed out from the back: lowest ids first.
  for (int b = num_blocks - 1; b >= 0; --b) free_blocks_.push_back(b);
  holders_.assign(num_blocks, 0);
}

KvCache::~KvCache() {
  if (storage_ != nullptr) ::munmap(storage_, storage_bytes_);
}

int KvCache::AvailableLocked() const {
  return static_cast<int>(free_blocks_.size() + evictable_.size());
}

int KvCache::num_free_blocks() const {
  absl::MutexLock lock(&mu_);
  return AvailableLocked();
}

int KvCache::num_cached_blocks() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(evictable_.size());
}

double KvCache::usage() const {
  absl::MutexLock lock(&mu_);
  return 1.0 - static_cast<double>(AvailableLocked()) / num_blocks_;
}

int32_t KvCache::TakeBlockLocked() {
  int32_t block;
  if (!free_blocks_.empty()) {
    block = free_blocks_.back();
    free_blocks_.pop_back();
  } else {
    block = evictable_.front();
    evictable_.pop_front();
    evictable_pos_.erase(block);
    cached_.erase(hash_of_.at(block));
    hash_of_.erase(block);
  }
  holders_[block] = 1;
  return block;
}

void KvCache::ReleaseBlockLocked(int32_t block) {
  if (--holders_[block] > 0) return;
  if (hash_of_.contains(block)) {
    evictable_.push_back(block);
    evictable_pos_[block] = std::prev(evictable_.end());
  } else {
    free_blocks_.push_back(block);
  }
}

absl::Status KvCache::AddSequence(SeqId seq) {
  absl::MutexLock lock(&mu_);
  if (!sequences_.emplace(seq, Sequence{}).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("KV cache already holds sequence ", seq));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> KvCache::AddSequenceWithPrefix(
    SeqId seq, absl::Span<const uint64_t> prefix_hashes) {
  absl::MutexLock lock(&mu_);
  auto [it, added] = sequences_.emplace(seq, Sequence{});
  if (!added) {
    return absl::AlreadyExistsError(
        absl::StrCat("KV cache already holds sequence ", seq));
  }
  Sequence& s = it->second;
  for (uint64_t hash : prefix_hashes) {
    auto cached = cached_.find(hash);
    if (cached == cached_.end()) break;
    const int32_t block = cached->second;
    if (holders_[block]++ == 0) {  // leaves the evictable list
      evictable_.erase(evictable_pos_.at(block));
      evictable_pos_.erase(block);
    }
    s.blocks.push_back(block);
  }
  s.num_tokens = static_cast<int>(s.blocks.size()) * shape_.block_size;
  return s.num_tokens;
}

absl::Status KvCache::RegisterPrefix(SeqId seq,
                                     absl::Span<const uint64_t> prefix_hashes) {
  absl::MutexLock lock(&mu_);
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("KV cache has no sequence ", seq));
  }
  const Sequence& s = it->second;
  const size_t full = static_cast<size_t>(s.num_tokens / shape_.block_size);
  if (prefix_hashes.size() > full) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence ", seq, " has ", full, " full blocks, not ",
        prefix_hashes.size()));
  }
  for (size_t i = 0; i < prefix_hashes.size(); ++i) {
    const int32_t block = s.blocks[i];
    if (hash_of_.contains(block) || cached_.contains(prefix_hashes[i])) {
      continue;
    }
    cached_[prefix_hashes[i]] = block;
    hash_of_[block] = prefix_hashes[i];
  }
  return absl::OkStatus();
}

int KvCache::CachedPrefixBlocks(absl::Span<const uint64_t> prefix_hashes) const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (uint64_t hash : prefix_hashes) {
    if (!cached_.contains(hash)) break;
    ++n;
  }
  return n;
}

absl::Status KvCache::Append(SeqId seq, int num_tokens) {
  if (num_tokens < 0) {
    return absl::InvalidArgumentError("cannot append a negative token count");
  }
  absl::MutexLock lock(&mu_);
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("KV cache has no sequence ", seq));
  }
  Sequence& s = it->second;
  const int needed = BlocksFor(int64_t{s.num_tokens} + num_tokens) -
                     static_cast<int>(s.blocks.size());
  if (needed > AvailableLocked()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache full: sequence ", seq, " needs ", needed, " more blocks, ",
        AvailableLocked(), " of ", num_blocks_, " free"));
  }
  for (int i = 0; i < needed; ++i) s.blocks.push_back(TakeBlockLocked());
  s.num_tokens += num_tokens;
  return absl::OkStatus();
}

void KvCache::FreeSequence(SeqId seq) {
  absl::MutexLock lock(&mu_);
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) return;
  // In reverse, so that a prefix's later blocks are evicted before its
  // earlier ones (which more prompts share).
  for (auto b = it->second.blocks.rbegin(); b != it->second.blocks.rend(); ++b) {
    ReleaseBlockLocked(*b);
  }
  sequences_.erase(it);
}

bool KvCache::HasSequence(SeqId seq) const {
  absl::MutexLock lock(&mu_);
  return sequences_.count(seq) > 0;
}

int KvCache::NumTokens(SeqId seq) const {
  absl::MutexLock lock(&mu_);
  auto it = sequences_.find(seq);
  return it == sequences_.end() ? 0 : it->second.num_tokens;
}

std::vector<int32_t> KvCache::BlockTable(SeqId seq) const {
  absl::MutexLock lock(&mu_);
  auto it = sequences_.find(seq);
  return it == sequences_.end() ? std::vector<int32_t>{} : it->second.blocks;
}

}  // namespace moe
