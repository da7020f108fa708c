#include "gateway/attention_pool.h"

#include <algorithm>
#include <chrono>

#include "core/kv_cache.h"
#include "core/rpc/channel_util.h"

namespace moe {

AttentionPool::AttentionPool(const std::vector<AttentionServerInfo>& servers,
                             int overload_margin, int prefix_capacity)
    : overload_margin_(overload_margin),
      in_flight_(servers.size(), 0),
      prefixes_(static_cast<int>(servers.size()), prefix_capacity) {
  for (const AttentionServerInfo& info : servers) {
    std::shared_ptr<grpc::Channel> channel = MakeChannel(info.address);
    servers_.push_back({info, v1::AttentionService::NewStub(channel),
                        grpc::health::v1::Health::NewStub(channel)});
  }
}

namespace {

bool Contains(const std::vector<int>& v, int x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

int AttentionPool::LeastLoadedLocked(const std::vector<int>& excluded) {
  const size_t n = servers_.size();
  int best = -1;
  for (size_t i = 0; i < n; ++i) {
    const int candidate = static_cast<int>((next_ + i) % n);
    if (Contains(excluded, candidate)) continue;
    if (best < 0 || in_flight_[candidate] < in_flight_[best]) best = candidate;
  }
  if (best < 0) best = static_cast<int>(next_ % n);  // all excluded
  next_ = best + 1;
  return best;
}

AttentionPool::Choice AttentionPool::Acquire(absl::Span<const int32_t> prompt,
                                             const std::vector<int>& excluded) {
  absl::MutexLock lock(&mu_);
  const int least = LeastLoadedLocked(excluded);
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
      if (Contains(excluded, s)) continue;
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

void AttentionPool::CheckServing(int index, double timeout_seconds,
                                 std::function<void(bool serving)> done) {
  struct Call {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
  };
  auto call = std::make_shared<Call>();
  call->context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::microseconds(static_cast<int64_t>(timeout_seconds * 1e6)));
  servers_[index].health->async()->Check(
      &call->context, &call->request, &call->response,
      [call, done = std::move(done)](grpc::Status status) {
        done(status.ok() && call->response.status() ==
                                grpc::health::v1::HealthCheckResponse::SERVING);
      });
}

int64_t AttentionPool::InFlight(int index) const {
  absl::MutexLock lock(&mu_);
  return in_flight_[index];
}

}  // namespace moe
