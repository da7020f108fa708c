#include "gateway/attention_pool.h"

#include "core/kv_cache.h"
#include "core/rpc/channel_util.h"

namespace moe {

AttentionPool::AttentionPool(const std::vector<AttentionServerInfo>& servers,
                             int overload_margin, int prefix_capacity)
    : overload_margin_(overload_margin),
      in_flight_(servers.size(), 0),
      prefixes_(static_cast<int>(servers.size()), prefix_capacity) {
  for (const AttentionServerInfo& info : servers) {
    servers_.push_back(
        {info, v1::AttentionService::NewStub(MakeChannel(info.address))});
  }
}

int AttentionPool::LeastLoadedLocked() {
  const size_t n = servers_.size();
  size_t best = next_ % n;
  for (size_t i = 1; i < n; ++i) {
    const size_t candidate = (next_ + i) % n;
    if (in_flight_[candidate] < in_flight_[best]) best = candidate;
  }
  next_ = best + 1;
  return static_cast<int>(best);
}

AttentionPool::Choice AttentionPool::Acquire(absl::Span<const int32_t> prompt) {
  absl::MutexLock lock(&mu_);
  const int least = LeastLoadedLocked();
  int chosen = least;
  int matched = 0;
  std::vector<uint64_t> hashes;
  if (!prompt.empty()) {
    // The last prompt token is always computed, so only blocks before it
    // can come from a cache (as the attention server matches them).
    const int block_size = servers_[least].info.kv_block_size;
    hashes = PrefixBlockHashes(prompt.subspan(0, prompt.size() - 1), block_size);
    int best = -1;
    for (int s = 0; s < size(); ++s) {
      if (servers_[s].info.kv_block_size != block_size) continue;
      const int m = prefixes_.MatchedBlocks(s, hashes);
      if (m > matched ||
          (m == matched && m > 0 && in_flight_[s] < in_flight_[best])) {
        best = s;
        matched = m;
      }
    }
    if (best >= 0 && matched > 0 &&
        in_flight_[best] <= in_flight_[least] + overload_margin_) {
      chosen = best;
    } else {
      matched = chosen == best ? matched : prefixes_.MatchedBlocks(least, hashes);
    }
    prefixes_.Record(chosen, hashes);
  }
  ++in_flight_[chosen];
  return {chosen, servers_[chosen].stub.get(), &servers_[chosen].info.address,
          matched * servers_[chosen].info.kv_block_size};
}

void AttentionPool::Release(int index) {
  absl::MutexLock lock(&mu_);
  --in_flight_[index];
}

int64_t AttentionPool::InFlight(int index) const {
  absl::MutexLock lock(&mu_);
  return in_flight_[index];
}

}  // namespace moe
