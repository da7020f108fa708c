// The attention servers a gateway sends requests to, and the choice among
// them: the server with the fewest requests in flight from this gateway
// (ties go round-robin), so concurrent streams spread evenly.
#ifndef MOE_GATEWAY_ATTENTION_POOL_H_
#define MOE_GATEWAY_ATTENTION_POOL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "moe/v1/attention.grpc.pb.h"

namespace moe {

// Thread-safe.
class AttentionPool {
 public:
  // One stub per address; `addresses` must not be empty.
  explicit AttentionPool(const std::vector<std::string>& addresses);

  struct Choice {
    int index = 0;
    v1::AttentionService::Stub* stub = nullptr;
    const std::string* address = nullptr;
  };
  // Picks the least-loaded server and counts one more request on it; the
  // caller must Release(choice.index) when the request ends.
  Choice Acquire();
  void Release(int index);

  int size() const { return static_cast<int>(servers_.size()); }
  // Requests in flight on server `index`.
  int64_t InFlight(int index) const;

 private:
  struct Server {
    std::string address;
    std::unique_ptr<v1::AttentionService::Stub> stub;
  };
  std::vector<Server> servers_;
  mutable absl::Mutex mu_;
  std::vector<int64_t> in_flight_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;  // round-robin start for ties
};

}  // namespace moe

#endif  // MOE_GATEWAY_ATTENTION_POOL_H_
