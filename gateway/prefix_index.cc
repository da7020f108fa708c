#include "gateway/prefix_index.h"

#include <algorithm>

namespace moe {

PrefixIndex::PrefixIndex(int num_servers, int capacity_per_server)
    : capacity_(std::max(1, capacity_per_server)),
      servers_(std::max(0, num_servers)) {}

int PrefixIndex::MatchedBlocks(int server,
                               absl::Span<const uint64_t> hashes) const {
  const Lru& lru = servers_[server];
  int n = 0;
  for (uint64_t hash : hashes) {
    if (!lru.where.contains(hash)) break;
    ++n;
  }
  return n;
}

void PrefixIndex::Record(int server, absl::Span<const uint64_t> hashes) {
  Lru& lru = servers_[server];
  // Deepest first, so that the leading blocks end up most recent and are
  // evicted last (they are the ones other prompts share).
  for (auto it = hashes.rbegin(); it != hashes.rend(); ++it) {
    auto found = lru.where.find(*it);
    if (found != lru.where.end()) lru.order.erase(found->second);
    lru.order.push_front(*it);
    lru.where[*it] = lru.order.begin();
  }
  while (static_cast<int>(lru.order.size()) > capacity_) {
    lru.where.erase(lru.order.back());
    lru.order.pop_back();
  }
}

}  // namespace moe
