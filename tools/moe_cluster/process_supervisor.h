// Child processes of the launcher and the signals that drive it.
//
// Neither class is thread-safe; use both from the main thread only. Children
// are started from the calling thread with PR_SET_PDEATHSIG(SIGKILL), which
// fires when that thread ends, so forking from the main thread ties them to
// the whole launcher: a SIGKILLed launcher leaves no orphans.
#ifndef MOE_TOOLS_MOE_CLUSTER_PROCESS_SUPERVISOR_H_
#define MOE_TOOLS_MOE_CLUSTER_PROCESS_SUPERVISOR_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace moe::cluster {

// Waits for SIGINT, SIGTERM and SIGCHLD synchronously (sigtimedwait), so
// that one loop notices both stop requests and child exits.
class SignalWaiter {
 public:
  // Blocks SIGINT, SIGTERM and SIGCHLD in the calling thread and the threads
  // it starts later. Call first thing in main, before any thread exists.
  static void BlockSignals();

  // Returns the signal that arrived within `timeout`, or 0.
  int Wait(absl::Duration timeout);
};

// How a child ended, for messages: "3", or "137 (killed by signal 9)".
std::string DescribeWaitStatus(int wait_status);

struct ChildExit {
  int id = 0;
  std::string name;
  pid_t pid = 0;
  int wait_status = 0;
  std::string log_path;
};

class ProcessSupervisor {
 public:
  ProcessSupervisor() = default;
  ProcessSupervisor(const ProcessSupervisor&) = delete;
  ProcessSupervisor& operator=(const ProcessSupervisor&) = delete;
  // SIGKILLs and reaps every child still running (the last resort; call
  // StopAll for an orderly stop).
  ~ProcessSupervisor();

  // Starts `path` (argv[0] = path, then `args`) with execv: no shell, stdin
  // from /dev/null, stdout and stderr to `log_path` (truncated), signal mask
  // and SIGINT/SIGTERM/SIGPIPE/SIGCHLD dispositions at their defaults, in its
  // own process group (so a terminal's Ctrl-C reaches only the launcher, which
  // stops the children in order), no file descriptor but 0-2 inherited.
  // `stop_group` orders StopAll: higher groups stop first. Returns the
  // child's id (dense, from 0). INTERNAL when the log cannot be opened or
  // fork fails; a failed exec shows as exit status 127 with the reason in the
  // log.
  absl::StatusOr<int> Spawn(const std::string& name, const std::string& path,
                            const std::vector<std::string>& args,
                            const std::string& log_path, int stop_group);

  // Reaps, without blocking, every child that has exited since the last
  // call; returns them in id order.
  std::vector<ChildExit> ReapExited();

  // Stops every running child: group by group from the highest, SIGTERM to
  // the group's children, then wait up to `grace` for them to exit (a SIGINT
  // or SIGTERM arriving through `waiter` meanwhile cuts the wait short), then
  // SIGKILL what remains of the group. Everything is reaped on return.
  // Returns the names of the children that had to be SIGKILLed, and whether
  // a second stop signal cut the waiting short.
  struct StopResult {
    std::vector<std::string> killed;
    bool hurried = false;
  };
  StopResult StopAll(absl::Duration grace, SignalWaiter& waiter);

  bool running(int id) const { return children_[id].running; }
  pid_t pid(int id) const { return children_[id].pid; }
  const std::string& name(int id) const { return children_[id].name; }
  const std::string& log_path(int id) const { return children_[id].log_path; }

 private:
  struct Child {
    std::string name;
    std::string log_path;
    pid_t pid = 0;
    int stop_group = 0;
    bool running = false;
    int wait_status = 0;
  };

  void KillAndReap(Child& child);

  std::vector<Child> children_;
};

}  // namespace moe::cluster

#endif  // MOE_TOOLS_MOE_CLUSTER_PROCESS_SUPERVISOR_H_
