// The launcher's child-process supervision, with standard system programs.
#include "tools/moe_cluster/process_supervisor.h"

#include <pthread.h>
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tools/moe_cluster/cluster_launcher.h"

namespace moe::cluster {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// Reaps until child `id` has exited (generous bound against hangs only),
// keeping the other exits seen meanwhile for later calls.
class Reaper {
 public:
  explicit Reaper(ProcessSupervisor& supervisor) : supervisor_(supervisor) {}
  ChildExit Await(int id) {
    for (int i = 0; i < 6000 && !seen_.count(id); ++i) {
      for (const ChildExit& exit : supervisor_.ReapExited()) {
        seen_[exit.id] = exit;
      }
      if (!seen_.count(id)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    EXPECT_TRUE(seen_.count(id)) << "child " << id << " did not exit";
    return seen_[id];
  }

 private:
  ProcessSupervisor& supervisor_;
  std::map<int, ChildExit> seen_;
};

ChildExit AwaitExit(ProcessSupervisor& supervisor, int id) {
  return Reaper(supervisor).Await(id);
}

TEST(ProcessSupervisorTest, RecordsExitStatusAndLogsOutput) {
  moe::testing::TempDir dir;
  ProcessSupervisor supervisor;
  absl::StatusOr<int> echo = supervisor.Spawn(
      "echo", "/bin/echo", {"hello", "from echo"}, dir.Join("echo.log"), 0);
  ASSERT_TRUE(echo.ok()) << echo.status();
  absl::StatusOr<int> fail =
      supervisor.Spawn("false", "/bin/false", {}, dir.Join("false.log"), 0);
  ASSERT_TRUE(fail.ok()) << fail.status();
  Reaper reaper(supervisor);
  const ChildExit echo_exit = reaper.Await(*echo);
  EXPECT_EQ(echo_exit.name, "echo");
  EXPECT_EQ(DescribeWaitStatus(echo_exit.wait_status), "0");
  EXPECT_EQ(moe::testing::ReadFileOrDie(dir.Join("echo.log")),
            "hello from echo\n");
  const ChildExit fail_exit = reaper.Await(*fail);
  EXPECT_EQ(DescribeWaitStatus(fail_exit.wait_status), "1");
  EXPECT_FALSE(supervisor.running(*fail));
}

TEST(ProcessSupervisorTest, AMissingProgramExitsWith127AndSaysWhy) {
  moe::testing::TempDir dir;
  ProcessSupervisor supervisor;
  absl::StatusOr<int> id = supervisor.Spawn("missing", dir.Join("nothing"), {},
                                            dir.Join("missing.log"), 0);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(DescribeWaitStatus(AwaitExit(supervisor, *id).wait_status), "127");
  EXPECT_THAT(moe::testing::ReadFileOrDie(dir.Join("missing.log")),
              HasSubstr("cannot execute " + dir.Join("nothing")));
}

TEST(ProcessSupervisorTest, AnUnwritableLogIsAnError) {
  ProcessSupervisor supervisor;
  absl::StatusOr<int> id =
      supervisor.Spawn("x", "/bin/true", {}, "/nonexistent/dir/x.log", 0);
  ASSERT_FALSE(id.ok());
  EXPECT_THAT(std::string(id.status().message()),
              HasSubstr("/nonexistent/dir/x.log"));
}

TEST(ProcessSupervisorTest, DescribesDeathBySignal) {
  moe::testing::TempDir dir;
  ProcessSupervisor supervisor;
  absl::StatusOr<int> id = supervisor.Spawn("sleep", "/bin/sleep", {"1000"},
                                            dir.Join("sleep.log"), 0);
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(supervisor.running(*id));
  kill(supervisor.pid(*id), SIGKILL);
  EXPECT_THAT(DescribeWaitStatus(AwaitExit(supervisor, *id).wait_status),
              StartsWith("137 (killed by signal 9"));
}

TEST(ProcessSupervisorTest, StopAllTerminatesEveryGroupAndReaps) {
  moe::testing::TempDir dir;
  ProcessSupervisor supervisor;
  std::vector<int> ids;
  for (int group = 0; group < 3; ++group) {
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<int> id = supervisor.Spawn(
          absl::StrCat("sleep-", group, "-", i), "/bin/sleep", {"1000"},
          dir.Join(absl::StrCat("sleep-", group, "-", i, ".log")), group);
      ASSERT_TRUE(id.ok()) << id.status();
      ids.push_back(*id);
    }
  }
  SignalWaiter waiter;
  // sleep dies of SIGTERM, so nothing needs SIGKILL.
  const ProcessSupervisor::StopResult stopped =
      supervisor.StopAll(absl::Seconds(60), waiter);
  EXPECT_THAT(stopped.killed, IsEmpty());
  EXPECT_FALSE(stopped.hurried);
  for (int id : ids) {
    EXPECT_FALSE(supervisor.running(id));
    int status = 0;
    EXPECT_EQ(waitpid(supervisor.pid(id), &status, WNOHANG), -1)
        << "not reaped: " << supervisor.name(id);
  }
}

TEST(ProcessSupervisorTest, ChildrenStartWithDefaultSignalState) {
  // The launcher blocks SIGTERM for itself; a child must not inherit that.
  moe::testing::TempDir dir;
  sigset_t before;
  pthread_sigmask(SIG_SETMASK, nullptr, &before);
  SignalWaiter::BlockSignals();  // this thread only; restored below
  ProcessSupervisor supervisor;
  absl::StatusOr<int> id =
      supervisor.Spawn("status", "/bin/grep", {"^Sig[BI]", "/proc/self/status"},
                       dir.Join("status.log"), 0);
  ASSERT_TRUE(id.ok()) << id.status();
  AwaitExit(supervisor, *id);
  const std::string status =
      moe::testing::ReadFileOrDie(dir.Join("status.log"));
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
  EXPECT_THAT(status, HasSubstr("SigBlk:\t0000000000000000"));
}

TEST(LogTailTest, KeepsTheLastLines) {
  moe::testing::TempDir dir;
  std::string text;
  for (int i = 1; i <= 30; ++i) absl::StrAppend(&text, "line ", i, "\n");
  moe::testing::WriteFileOrDie(dir.Join("log"), text);
  const std::string tail = LogTail(dir.Join("log"), 20);
  EXPECT_THAT(tail, StartsWith("line 11\n"));
  EXPECT_THAT(tail, HasSubstr("line 30\n"));
  EXPECT_THAT(tail, ::testing::Not(HasSubstr("line 10\n")));
  moe::testing::WriteFileOrDie(dir.Join("short"), "only\n");
  EXPECT_EQ(LogTail(dir.Join("short"), 20), "only\n");
  EXPECT_EQ(LogTail(dir.Join("absent"), 20), "");
}

}  // namespace
}  // namespace moe::cluster
