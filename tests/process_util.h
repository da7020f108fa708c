// Test helpers for running the real binaries: a child process with its
// stdout on a pipe (read line by line, with timeouts that only guard against
// hangs) and its stderr in a file, plus /proc queries for leftover processes.
#ifndef MOE_TESTS_PROCESS_UTIL_H_
#define MOE_TESTS_PROCESS_UTIL_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moe::testing {

class ChildProcess {
 public:
  // Starts argv[0] with `argv` (posix_spawn, no shell), the current
  // environment plus `extra_env` ("KEY=VALUE"), stdin from /dev/null.
  // ADD_FAILUREs and returns nullptr when it cannot be started.
  static std::unique_ptr<ChildProcess> Start(
      const std::vector<std::string>& argv,
      const std::vector<std::string>& extra_env = {});
  // SIGKILLs and reaps the child if it still runs.
  ~ChildProcess();

  pid_t pid() const { return pid_; }

  // Reads stdout until a line equal to `line` arrives; returns every line
  // read so far (by this and earlier calls), or nullopt on EOF or timeout.
  std::optional<std::vector<std::string>> ReadUntilLine(const std::string& line,
                                                        double timeout_seconds);
  // Reads stdout until its text contains `text`; false on EOF or timeout.
  bool ReadUntilContains(const std::string& text, double timeout_seconds);
  // Reads stdout to EOF (or timeout) and returns all of it.
  std::string ReadAll(double timeout_seconds);
  const std::string& stdout_text() const { return out_; }
  std::string StderrText() const;

  void Signal(int signal) const;
  // Waits for the child to end; its wait status, or nullopt on timeout.
  std::optional<int> Wait(double timeout_seconds);

 private:
  ChildProcess() = default;
  // Reads what is available within `timeout_seconds`; false on EOF/timeout.
  bool ReadMore(double timeout_seconds);

  pid_t pid_ = 0;
  int out_fd_ = -1;
  bool eof_ = false;
  bool reaped_ = false;
  std::string out_;
  std::string err_path_;
};

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  std::string out;
  std::string err;
};

// Runs `argv` to completion (SIGKILLed after `timeout_seconds`).
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& extra_env = {},
                         double timeout_seconds = 120);

// Pids whose parent is `parent` (from /proc).
std::vector<pid_t> ChildPids(pid_t parent);
// The command line of `pid`, arguments joined by spaces ("" if gone).
std::string CommandLine(pid_t pid);
// The arguments of `pid`'s command line (empty if gone).
std::vector<std::string> CommandLineArgs(pid_t pid);
// Starts again a server a test killed, with the command line it had
// (`argv`, from CommandLineArgs) on the same `address` (its --listen), so
// that its peers find it again; its --port_file and --metrics_port_file
// become files under `dir` ("restarted.port", "restarted.metrics_port").
std::unique_ptr<ChildProcess> RestartServer(
    const std::vector<std::string>& argv, const std::string& address,
    const std::string& dir);
// True while `pid` exists (zombies included).
bool ProcessExists(pid_t pid);

}  // namespace moe::testing

#endif  // MOE_TESTS_PROCESS_UTIL_H_
