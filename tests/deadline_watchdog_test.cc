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

TEST(DeadlineWatchdogTest, ExpiredDeadlinesRunCancelledOnesDoNot) {
  DeadlineWatchdog watchdog;
  absl::Notification fired;
  std::atomic<bool> cancelled_ran{false};
  const DeadlineWatchdog::Handle kept =
      watchdog.Arm(absl::Now() + absl::Milliseconds(20), [&] { fired.Notify(); });
  const DeadlineWatchdog::Handle dropped = watchdog.Arm(
      absl::Now() + absl::Milliseconds(10), [&] { cancelled_ran = true; });
  EXPECT_TRUE(watchdog.Cancel(dropped));
  EXPECT_FALSE(watchdog.Cancel(dropped));  // already gone
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_FALSE(watchdog.Cancel(kept));  // already ran
  EXPECT_FALSE(cancelled_ran);
}

TEST(DeadlineWatchdogTest, AnEarlierDeadlineArmedLaterRunsFirst) {
  DeadlineWatchdog watchdog;
  absl::Mutex mu;
  std::vector<int> order;
  absl::Notification both;
  watchdog.Arm(absl::Now() + absl::Seconds(2), [&] {
    absl::MutexLock lock(&mu);
    order.push_back(2);
    both.Notify();
  });
  // The thread sleeps until the 2 s deadline; this one must wake it.
  watchdog.Arm(absl::Now() + absl::Milliseconds(5), [&] {
    absl::MutexLock lock(&mu);
    order.push_back(1);
  });
  ASSERT_TRUE(both.WaitForNotificationWithTimeout(absl::Seconds(30)));
  absl::MutexLock lock(&mu);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
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
