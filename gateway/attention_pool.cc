#include "gateway/attention_pool.h"

#include "core/rpc/channel_util.h"

namespace moe {

AttentionPool::AttentionPool(const std::vector<std::string>& addresses)
    : in_flight_(addresses.size(), 0) {
  for (const std::string& address : addresses) {
    servers_.push_back(
        {address, v1::AttentionService::NewStub(MakeChannel(address))});
  }
}

AttentionPool::Choice AttentionPool::Acquire() {
  absl::MutexLock lock(&mu_);
  const size_t n = servers_.size();
  size_t best = next_ % n;
  for (size_t i = 1; i < n; ++i) {
    const size_t candidate = (next_ + i) % n;
    if (in_flight_[candidate] < in_flight_[best]) best = candidate;
  }
  next_ = best + 1;
  ++in_flight_[best];
  return {static_cast<int>(best), servers_[best].stub.get(),
          &servers_[best].address};
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
