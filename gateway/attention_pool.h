// The attention servers of one kind (role both, prefill or decode) a
// gateway sends requests to, and the choice among them. Without a prompt:
// the server with the fewest requests in flight from this gateway (ties go
// round-robin). With a prompt (servers that prefill): cache-aware, as
// Mooncake's conductor does: the server whose prefix cache likely holds the
// longest prefix of the prompt, unless it has more than `overload_margin`
// requests in flight beyond the least-loaded one, which then gets it.
#ifndef MOE_GATEWAY_ATTENTION_POOL_H_
#define MOE_GATEWAY_ATTENTION_POOL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gateway/prefix_index.h"
#include "moe/v1/attention.grpc.pb.h"

namespace moe {

struct AttentionServerInfo {
  std::string address;
  int kv_block_size = 16;  // tokens per KV block, as the server reported
};

// Thread-safe.
class AttentionPool {
 public:
  // One stub per server; `servers` must not be empty.
  AttentionPool(const std::vector<AttentionServerInfo>& servers,
                int overload_margin = 4, int prefix_capacity = 65536);

  struct Choice {
    int index = 0;
    v1::AttentionService::Stub* stub = nullptr;
    const std::string* address = nullptr;
    int expected_cached_tokens = 0;  // the prefix the choice was made for
  };
  // Picks a server and counts one more request on it; the caller must
  // Release(choice.index) when the request ends. With `prompt` the choice
  // is cache-aware and the prompt's blocks are recorded for the server.
  // Servers whose index is in `excluded` are not chosen (a migrated
  // request's failed servers); precondition: at least one is left.
  Choice Acquire(absl::Span<const int32_t> prompt = {},
                 const std::vector<int>& excluded = {});
  void Release(int index);

  // Asks server `index` for grpc.health.v1 (at most `timeout_seconds`) and
  // runs `done(serving)` on a gRPC thread; never blocks.
  void CheckServing(int index, double timeout_seconds,
                    std::function<void(bool serving)> done);
  const std::string& address(int index) const {
    return servers_[index].info.address;
  }

  int size() const { return static_cast<int>(servers_.size()); }
  // Requests in flight on server `index`.
  int64_t InFlight(int index) const;

 private:
  struct Server {
    AttentionServerInfo info;
    std::unique_ptr<v1::AttentionService::Stub> stub;
    std::unique_ptr<grpc::health::v1::Health::Stub> health;
  };
  int LeastLoadedLocked(const std::vector<int>& excluded)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::vector<Server> servers_;
  const int overload_margin_;
  mutable absl::Mutex mu_;
  std::vector<int64_t> in_flight_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;  // round-robin start for ties
  PrefixIndex prefixes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_GATEWAY_ATTENTION_POOL_H_
