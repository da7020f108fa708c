// A child process for benchmarks and end-to-end tests: started without a
// shell, its stdout readable line by line with a timeout, stopped with a
// signal. The destructor kills (SIGKILL) and reaps a child still running,
// and the child gets SIGKILL if this process dies, so none outlives it.
#ifndef MOE_CORE_SUBPROCESS_H_
#define MOE_CORE_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe {

class Subprocess {
 public:
  // Runs argv[0] (a path) with argv[1..]. stdout is captured; stderr goes to
  // `stderr_path` (appended) or, when empty, to this process's stderr.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const std::vector<std::string>& argv, const std::string& stderr_path = "");
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // The next line of stdout without its newline. OUT_OF_RANGE at end of
  // output (the child closed stdout or exited), DEADLINE_EXCEEDED when no
  // whole line arrives within `timeout_seconds`.
  absl::StatusOr<std::string> ReadLine(double timeout_seconds);
  // Reads lines until one equals `line`; the lines before it are appended
  // to `*seen` when not null. Errors as ReadLine.
  absl::Status WaitForLine(const std::string& line, double timeout_seconds,
                           std::vector<std::string>* seen);

  void Signal(int signal);
  // Waits for the child to exit: its exit code, or 128 + signal number when
  // a signal ended it. DEADLINE_EXCEEDED (child left running) on timeout.
  absl::StatusOr<int> Wait(double timeout_seconds);
  bool running() const { return pid_ > 0; }

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string buffer_;  // stdout read but not yet returned
  bool eof_ = false;
};

}  // namespace moe

#endif  // MOE_CORE_SUBPROCESS_H_
