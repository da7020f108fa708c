#include "tools/moe_cluster/process_supervisor.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/rpc/server_util.h"

namespace moe::cluster {
namespace {

sigset_t WaitedSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGCHLD);
  return signals;
}

bool IsStopSignal(int signal) { return signal == SIGINT || signal == SIGTERM; }

// Runs in the child between fork and exec: async-signal-safe calls only
// (the launcher has gRPC threads by then), everything prepared beforehand.
[[noreturn]] void ExecChild(pid_t parent, int null_fd, int log_fd,
                            const char* path, char* const* argv,
                            const std::string& exec_error) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(127);  // the launcher died before prctl
  setpgid(0, 0);
  struct sigaction default_action;
  std::memset(&default_action, 0, sizeof(default_action));
  default_action.sa_handler = SIG_DFL;
  for (int signal : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD}) {
    sigaction(signal, &default_action, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) {
    _exit(127);
  }
  close_range(3, ~0U, 0);
  execv(path, argv);
  // No strerror here (not async-signal-safe): the errno number instead.
  char digits[16];
  int n = 0;
  for (int e = errno; n == 0 || e > 0; e /= 10) digits[n++] = '0' + e % 10;
  (void)!write(2, exec_error.data(), exec_error.size());
  while (n > 0) (void)!write(2, &digits[--n], 1);
  (void)!write(2, ")\n", 2);
  _exit(127);
}

}  // namespace

void SignalWaiter::BlockSignals() {
  BlockTerminationSignals();
  sigset_t child;
  sigemptyset(&child);
  sigaddset(&child, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &child, nullptr);
}

int SignalWaiter::Wait(absl::Duration timeout) {
  const sigset_t signals = WaitedSignals();
  const timespec wait =
      absl::ToTimespec(std::max(timeout, absl::ZeroDuration()));
  const int signal = sigtimedwait(&signals, nullptr, &wait);
  return signal > 0 ? signal : 0;
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return absl::StrCat(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    const int signal = WTERMSIG(wait_status);
    return absl::StrCat(128 + signal, " (killed by signal ", signal, ", ",
                        strsignal(signal), ")");
  }
  return absl::StrCat("wait status ", wait_status);
}

ProcessSupervisor::~ProcessSupervisor() {
  for (Child& child : children_) {
    if (child.running) KillAndReap(child);
  }
}

absl::StatusOr<int> ProcessSupervisor::Spawn(
    const std::string& name, const std::string& path,
    const std::vector<std::string>& args, const std::string& log_path,
    int stop_group) {
  const int log_fd =
      open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot open log file ", log_path, ": ", strerror(errno)));
  }
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    close(log_fd);
    return absl::InternalError(
        absl::StrCat("cannot open /dev/null: ", strerror(errno)));
  }
  std::vector<std::string> argv_strings = {path};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const std::string exec_error =
      absl::StrCat("moe-cluster: cannot execute ", path, " (errno ");
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid == 0) {
    ExecChild(parent, null_fd, log_fd, path.c_str(), argv.data(), exec_error);
  }
  const int fork_errno = errno;
  close(log_fd);
  close(null_fd);
  if (pid < 0) {
    return absl::InternalError(absl::StrCat(
        "cannot start ", name, ": fork failed: ", strerror(fork_errno)));
  }
  Child child;
  child.name = name;
  child.log_path = log_path;
  child.pid = pid;
  child.stop_group = stop_group;
  child.running = true;
  children_.push_back(std::move(child));
  return static_cast<int>(children_.size()) - 1;
}

std::vector<ChildExit> ProcessSupervisor::ReapExited() {
  std::vector<ChildExit> exited;
  for (size_t id = 0; id < children_.size(); ++id) {
    Child& child = children_[id];
    if (!child.running) continue;
    int status = 0;
    const pid_t done = waitpid(child.pid, &status, WNOHANG);
    if (done != child.pid) continue;
    child.running = false;
    child.wait_status = status;
    exited.push_back(
        {static_cast<int>(id), child.name, child.pid, status, child.log_path});
  }
  return exited;
}

void ProcessSupervisor::KillAndReap(Child& child) {
  kill(child.pid, SIGKILL);
  int status = 0;
  while (waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  child.running = false;
  child.wait_status = status;
}

ProcessSupervisor::StopResult ProcessSupervisor::StopAll(
    absl::Duration grace, SignalWaiter& waiter) {
  StopResult result;
  int top_group = 0;
  for (const Child& child : children_) {
    top_group = std::max(top_group, child.stop_group);
  }
  bool hurry = false;  // a second stop signal: no more waiting
  for (int group = top_group; group >= 0; --group) {
    auto group_running = [&] {
      for (const Child& child : children_) {
        if (child.stop_group == group && child.running) return true;
      }
      return false;
    };
    for (const Child& child : children_) {
      if (child.stop_group == group && child.running) kill(child.pid, SIGTERM);
    }
    const absl::Time deadline = absl::Now() + grace;
    ReapExited();
    while (!hurry && group_running() && absl::Now() < deadline) {
      const int signal = waiter.Wait(
          std::min(deadline - absl::Now(), absl::Milliseconds(100)));
      if (IsStopSignal(signal)) hurry = true;
      ReapExited();
    }
    ReapExited();
    for (Child& child : children_) {
      if (child.stop_group != group || !child.running) continue;
      result.killed.push_back(child.name);
      KillAndReap(child);
    }
  }
  result.hurried = hurry;
  return result;
}

}  // namespace moe::cluster
