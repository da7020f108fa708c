#include "core/deadline_watchdog.h"

#include <vector>

namespace moe {

DeadlineWatchdog::DeadlineWatchdog() : thread_([this] { Loop(); }) {}

DeadlineWatchdog::~DeadlineWatchdog() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    woken_ = true;
  }
  thread_.join();
}

DeadlineWatchdog::Handle DeadlineWatchdog::Arm(
    absl::Time deadline, std::function<void()> on_expiry) {
  absl::MutexLock lock(&mu_);
  const Handle handle = next_handle_++;
  armed_.emplace(std::make_pair(deadline, handle), std::move(on_expiry));
  deadline_of_.emplace(handle, deadline);
  // Only a deadline earlier than the one the thread sleeps until needs it.
  if (deadline < sleeping_until_) woken_ = true;
  return handle;
}

bool DeadlineWatchdog::Cancel(Handle handle) {
  absl::MutexLock lock(&mu_);
  auto it = deadline_of_.find(handle);
  if (it == deadline_of_.end()) return false;
  armed_.erase({it->second, handle});
  deadline_of_.erase(it);
  return true;
}

bool DeadlineWatchdog::WakeCondition() const { return woken_; }

void DeadlineWatchdog::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    // Run what has expired, outside the lock.
    const absl::Time now = absl::Now();
    std::vector<std::function<void()>> expired;
    while (!armed_.empty() && armed_.begin()->first.first <= now) {
      deadline_of_.erase(armed_.begin()->first.second);
      expired.push_back(std::move(armed_.begin()->second));
      armed_.erase(armed_.begin());
    }
    if (!expired.empty()) {
      mu_.Unlock();
      for (std::function<void()>& fn : expired) fn();
      mu_.Lock();
      continue;
    }
    sleeping_until_ =
        armed_.empty() ? absl::InfiniteFuture() : armed_.begin()->first.first;
    woken_ = false;
    mu_.AwaitWithDeadline(
        absl::Condition(this, &DeadlineWatchdog::WakeCondition),
        sleeping_until_);
    sleeping_until_ = absl::InfiniteFuture();
  }
}

}  // namespace moe
