#include "core/kv_cache.h"

#include <sys/mman.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moe {

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(
    const KvCacheShape& shape, int64_t memory_bytes) {
  if (shape.num_layers <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0 ||
      shape.block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache shape must be positive: layers=", shape.num_layers,
        " kv_heads=", shape.num_kv_heads, " head_dim=", shape.head_dim,
        " block_size=", shape.block_size));
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
      layer_floats_(int64_t{num_blocks} * 2 * shape.block_size * row_floats_) {
  free_blocks_.reserve(num_blocks);
  // Handed out from the back: lowest ids first.
  for (int b = num_blocks - 1; b >= 0; --b) free_blocks_.push_back(b);
}

KvCache::~KvCache() {
  if (storage_ != nullptr) ::munmap(storage_, storage_bytes_);
}

int KvCache::num_free_blocks() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(free_blocks_.size());
}

double KvCache::usage() const {
  absl::MutexLock lock(&mu_);
  return 1.0 - static_cast<double>(free_blocks_.size()) / num_blocks_;
}

absl::Status KvCache::AddSequence(SeqId seq) {
  absl::MutexLock lock(&mu_);
  if (!sequences_.emplace(seq, Sequence{}).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("KV cache already holds sequence ", seq));
  }
  return absl::OkStatus();
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
  if (needed > static_cast<int>(free_blocks_.size())) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache full: sequence ", seq, " needs ", needed, " more blocks, ",
        free_blocks_.size(), " of ", num_blocks_, " free"));
  }
  for (int i = 0; i < needed; ++i) {
    s.blocks.push_back(free_blocks_.back());
    free_blocks_.pop_back();
  }
  s.num_tokens += num_tokens;
  return absl::OkStatus();
}

void KvCache::FreeSequence(SeqId seq) {
  absl::MutexLock lock(&mu_);
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) return;
  for (auto b = it->second.blocks.rbegin(); b != it->second.blocks.rend(); ++b) {
    free_blocks_.push_back(*b);
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
