// CPU lists and pinning (core/cpu_affinity.h), and ThreadPool's pinned
// threads: every chunk of a pool pinned to one CPU runs on that CPU.
#include "core/cpu_affinity.h"

#include <sched.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/thread_pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

TEST(CpuAffinityTest, ParsesEmptyAllListsAndRanges) {
  const std::vector<int> allowed = AllowedCpus();
  ASSERT_FALSE(allowed.empty());
  EXPECT_EQ(*ParseCpuList(""), std::vector<int>());
  EXPECT_EQ(*ParseCpuList("  "), std::vector<int>());
  EXPECT_EQ(*ParseCpuList("all"), allowed);
  const int first = allowed.front();
  const int last = allowed.back();
  EXPECT_EQ(*ParseCpuList(absl::StrCat(last, ",", first)),
            (std::vector<int>{last, first}));
  EXPECT_EQ(*ParseCpuList(absl::StrCat(first, "-", first)),
            std::vector<int>{first});
  if (allowed.size() >= 2 && allowed[1] == first + 1) {
    EXPECT_EQ(*ParseCpuList(absl::StrCat(" ", first, "-", first + 1, " ")),
              (std::vector<int>{first, first + 1}));
  }
}

TEST(CpuAffinityTest, BadItemsAndForeignCpusAreNamed) {
  for (const char* bad : {"x", "1-", "-1", "3-1", "0-1-2", "0,,1", "0.5"}) {
    absl::StatusOr<std::vector<int>> cpus = ParseCpuList(bad);
    ASSERT_FALSE(cpus.ok()) << bad;
    EXPECT_EQ(cpus.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(cpus.status().message(), HasSubstr("expected \"all\"")) << bad;
  }
  // A CPU this process may not run on (no machine here has 1024 CPUs).
  absl::StatusOr<std::vector<int>> far = ParseCpuList("1023");
  ASSERT_FALSE(far.ok());
  EXPECT_THAT(far.status().message(), HasSubstr("names CPU 1023"));
  EXPECT_THAT(far.status().message(), HasSubstr("allowed: "));
  EXPECT_FALSE(PinCurrentThread(-1).ok());
}

TEST(CpuAffinityTest, DescribesPinning) {
  EXPECT_EQ(DescribePinning({}), "");
  EXPECT_EQ(DescribePinning({0, 1}), ", compute threads pinned to CPUs 0,1");
}

TEST(CpuAffinityTest, APinnedThreadRunsOnItsCpu) {
  const int cpu = AllowedCpus().back();
  int seen = -1;
  std::thread thread([&] {
    ASSERT_TRUE(PinCurrentThread(cpu).ok());
    seen = sched_getcpu();
  });
  thread.join();
  EXPECT_EQ(seen, cpu);
}

TEST(CpuAffinityTest, EveryChunkOfAPoolPinnedToOneCpuRunsThere) {
  const int cpu = AllowedCpus().back();
  std::set<int> cpus_seen;
  std::set<std::thread::id> threads_seen;
  std::mutex mu;
  std::thread owner([&] {
    ThreadPool pool(3, ThreadPool::kServerSpinMicroseconds, {cpu});
    EXPECT_TRUE(pool.pinned());
    ASSERT_TRUE(pool.PinOwner().ok());
    for (int round = 0; round < 20; ++round) {
      pool.ParallelFor(64, 1, [&](int64_t, int64_t) {
        std::lock_guard<std::mutex> lock(mu);
        cpus_seen.insert(sched_getcpu());
        threads_seen.insert(std::this_thread::get_id());
      });
    }
  });
  owner.join();
  EXPECT_EQ(cpus_seen, std::set<int>{cpu});
  EXPECT_GE(threads_seen.size(), 1u);
}

TEST(CpuAffinityTest, AnUnpinnedPoolPinsNothing) {
  ThreadPool pool(2);
  EXPECT_FALSE(pool.pinned());
  EXPECT_TRUE(pool.PinOwner().ok());
}

TEST(CpuAffinityTest, LoweringPriorityChangesOnlyTheCallingThread) {
  const int before = CurrentThreadNice();
  int lowered_nice = 0;
  std::thread loader([&] {
    ASSERT_TRUE(LowerCurrentThreadPriority().ok());
    lowered_nice = CurrentThreadNice();
  });
  loader.join();
  EXPECT_EQ(lowered_nice, 19);
  EXPECT_EQ(CurrentThreadNice(), before);
  EXPECT_NE(before, 19);
}

}  // namespace
}  // namespace moe
