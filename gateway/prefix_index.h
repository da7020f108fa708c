// Which prompt prefixes each server likely holds in its prefix cache: the
// full-block hashes (PrefixBlockHashes) of the prompts this gateway sent it,
// the most recent `capacity` per server. Servers evict on their own, so a
// match is a hint, not a promise; a wrong hint costs only a recomputation.
// Not thread-safe (the AttentionPool's lock guards it).
#ifndef MOE_GATEWAY_PREFIX_INDEX_H_
#define MOE_GATEWAY_PREFIX_INDEX_H_

#include <cstdint>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"

namespace moe {

class PrefixIndex {
 public:
  PrefixIndex(int num_servers, int capacity_per_server);

  // How many leading `hashes` were recorded for `server`.
  int MatchedBlocks(int server, absl::Span<const uint64_t> hashes) const;
  // Records `hashes` for `server` as most recently used, evicting the least
  // recently used beyond the capacity.
  void Record(int server, absl::Span<const uint64_t> hashes);

 private:
  struct Lru {
    std::list<uint64_t> order;  // most recent first
    absl::flat_hash_map<uint64_t, std::list<uint64_t>::iterator> where;
  };
  int capacity_;
  std::vector<Lru> servers_;
};

}  // namespace moe

#endif  // MOE_GATEWAY_PREFIX_INDEX_H_
