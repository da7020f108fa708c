// Deadlines for many short calls without a timer per call: one thread
// sleeps until the earliest armed deadline and runs the expiry callbacks of
// those that pass. Arming and cancelling cost a map insertion or erase under
// a mutex and wake the thread only when the new deadline is the earliest,
// which, for calls with equal timeouts, is almost never.
#ifndef MOE_CORE_DEADLINE_WATCHDOG_H_
#define MOE_CORE_DEADLINE_WATCHDOG_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace moe {

// Thread-safe.
class DeadlineWatchdog {
 public:
  using Handle = uint64_t;

  DeadlineWatchdog();
  // Drops every armed deadline without running it.
  ~DeadlineWatchdog();
  DeadlineWatchdog(const DeadlineWatchdog&) = delete;
  DeadlineWatchdog& operator=(const DeadlineWatchdog&) = delete;

  // Runs `on_expiry` on the watchdog's thread once `deadline` passes, unless
  // Cancel(handle) comes first. `on_expiry` must not call back into this
  // watchdog's Arm or Cancel with anything that blocks on it.
  Handle Arm(absl::Time deadline, std::function<void()> on_expiry);
  // True when the deadline was still armed (it will not run); false when it
  // already ran or is running.
  bool Cancel(Handle handle);

 private:
  void Loop();
  bool WakeCondition() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  // (deadline, handle) -> callback; ordered so that begin() is the earliest.
  std::map<std::pair<absl::Time, Handle>, std::function<void()>> armed_
      ABSL_GUARDED_BY(mu_);
  std::map<Handle, absl::Time> deadline_of_ ABSL_GUARDED_BY(mu_);
  Handle next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  absl::Time sleeping_until_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace moe

#endif  // MOE_CORE_DEADLINE_WATCHDOG_H_
