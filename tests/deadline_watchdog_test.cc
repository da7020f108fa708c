// DeadlineWatchdog: expired deadlines run, cancelled ones do not, earlier
// deadlines armed later still run first, and destruction drops the rest.
#include "core/deadline_watchdog.h"

#include <atomic>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

// Each case below needs this thread to reach a step before a deadline it
// armed a moment earlier; on a busy machine it may not, and then the case
// did not arise and is run again (the deadlines are absolute, so whether
// it did is known exactly). A correct watchdog passes every attempt that
// counts; kAttempts only bounds the retries.
constexpr int kAttempts = 50;

TEST(DeadlineWatchdogTest, ExpiredDeadlinesRunCancelledOnesDoNot) {
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    absl::Notification fired;
    std::atomic<bool> cancelled_ran{false};
    DeadlineWatchdog watchdog;  // destroyed first: its thread is joined
    const absl::Time drop_at = absl::Now() + absl::Milliseconds(100);
    const DeadlineWatchdog::Handle kept = watchdog.Arm(
        drop_at + absl::Milliseconds(10), [&] { fired.Notify(); });
    const DeadlineWatchdog::Handle dropped =
        watchdog.Arm(drop_at, [&] { cancelled_ran = true; });
    const bool cancelled = watchdog.Cancel(dropped);
    // Cancelled before its deadline: it cannot have run, and must not.
    if (absl::Now() >= drop_at) continue;
    EXPECT_TRUE(cancelled);
    EXPECT_FALSE(watchdog.Cancel(dropped));  // already gone
    ASSERT_TRUE(fired.WaitForNotificationWithTimeout(absl::Seconds(30)));
    EXPECT_FALSE(watchdog.Cancel(kept));  // already ran
    // `kept` ran after `dropped`'s deadline, which would have run first.
    EXPECT_FALSE(cancelled_ran);
    return;
  }
  FAIL() << "never cancelled within 100 ms of arming in " << kAttempts
         << " attempts";
}

TEST(DeadlineWatchdogTest, AnEarlierDeadlineArmedLaterRunsFirst) {
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    absl::Mutex mu;
    std::vector<int> order;
    absl::Notification both;
    DeadlineWatchdog watchdog;  // destroyed first: its thread is joined
    const absl::Time later = absl::Now() + absl::Seconds(2);
    watchdog.Arm(later, [&] {
      absl::MutexLock lock(&mu);
      order.push_back(2);
      both.Notify();
    });
    // The thread sleeps until the 2 s deadline; this one must wake it.
    const absl::Time earlier = absl::Now() + absl::Milliseconds(5);
    watchdog.Arm(earlier, [&] {
      absl::MutexLock lock(&mu);
      order.push_back(1);
    });
    // Armed after the later deadline passed, it is not the earlier one.
    if (earlier >= later) continue;
    ASSERT_TRUE(both.WaitForNotificationWithTimeout(absl::Seconds(30)));
    absl::MutexLock lock(&mu);
    EXPECT_EQ(order, (std::vector<int>{1, 2}));
    return;
  }
  FAIL() << "never armed a deadline within 2 s of another in " << kAttempts
         << " attempts";
}

TEST(DeadlineWatchdogTest, DestructionDropsArmedDeadlines) {
  std::atomic<bool> ran{false};
  {
    DeadlineWatchdog watchdog;
    watchdog.Arm(absl::Now() + absl::Hours(1), [&] { ran = true; });
  }
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace moe
