#include "tests/process_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"

extern char** environ;

namespace moe::testing {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point After(double seconds) {
  return Clock::now() +
         std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

int MillisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

std::unique_ptr<ChildProcess> ChildProcess::Start(
    const std::vector<std::string>& argv,
    const std::vector<std::string>& extra_env) {
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  const char* tmp = std::getenv("TMPDIR");
  std::string err_path =
      std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/moe_stderr_XXXXXX";
  const int err_fd = mkstemp(err_path.data());
  if (err_fd < 0) {
    ADD_FAILURE() << "mkstemp failed";
    return nullptr;
  }
  child->err_path_ = err_path;
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2 failed";
    close(err_fd);
    return nullptr;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> c_env, c_argv;
  for (std::string& e : env) c_env.push_back(e.data());
  c_env.push_back(nullptr);
  std::vector<std::string> args = argv;
  for (std::string& a : args) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  // posix_spawnp: a bare program name (node, curl) is looked up on PATH.
  const int rc = posix_spawnp(&child->pid_, args[0].c_str(), &actions, nullptr,
                             c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  close(err_fd);
  child->out_fd_ = pipe_fds[0];
  if (rc != 0) {
    ADD_FAILURE() << "cannot start " << args[0] << ": " << std::strerror(rc);
    child->reaped_ = true;
    return nullptr;
  }
  return child;
}

ChildProcess::~ChildProcess() {
  if (!reaped_ && pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
  if (!err_path_.empty()) std::remove(err_path_.c_str());
}

bool ChildProcess::ReadMore(double timeout_seconds) {
  if (eof_) return false;
  pollfd p = {out_fd_, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(timeout_seconds * 1000)) <= 0) return false;
  char buffer[4096];
  const ssize_t n = read(out_fd_, buffer, sizeof(buffer));
  if (n <= 0) {
    eof_ = true;
    return false;
  }
  out_.append(buffer, n);
  return true;
}

std::optional<std::vector<std::string>> ChildProcess::ReadUntilLine(
    const std::string& line, double timeout_seconds) {
  const auto deadline = After(timeout_seconds);
  while (true) {
    std::vector<std::string> lines = SplitLines(out_);
    // Only complete lines count.
    if (!out_.empty() && out_.back() != '\n') lines.pop_back();
    for (const std::string& l : lines) {
      if (l == line) return lines;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    if (!ReadMore(MillisLeft(deadline) / 1000.0) && eof_) return std::nullopt;
  }
}

bool ChildProcess::ReadUntilContains(const std::string& text,
                                     double timeout_seconds) {
  const auto deadline = After(timeout_seconds);
  while (out_.find(text) == std::string::npos) {
    if (Clock::now() >= deadline) return false;
    if (!ReadMore(MillisLeft(deadline) / 1000.0) && eof_) return false;
  }
  return true;
}

std::string ChildProcess::ReadAll(double timeout_seconds) {
  const auto deadline = After(timeout_seconds);
  while (!eof_ && Clock::now() < deadline)
    ReadMore(MillisLeft(deadline) / 1000.0);
  return out_;
}

std::string ChildProcess::StderrText() const {
  std::ifstream in(err_path_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void ChildProcess::Signal(int signal) const {
  if (!reaped_) kill(pid_, signal);
}

std::optional<int> ChildProcess::Wait(double timeout_seconds) {
  const auto deadline = After(timeout_seconds);
  while (true) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      return status;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& extra_env,
                         double timeout_seconds) {
  ProcessResult result;
  std::unique_ptr<ChildProcess> child = ChildProcess::Start(argv, extra_env);
  if (child == nullptr) return result;
  result.out = child->ReadAll(timeout_seconds);
  std::optional<int> status = child->Wait(timeout_seconds);
  EXPECT_TRUE(status.has_value()) << argv[0] << " did not finish";
  if (status.has_value() && WIFEXITED(*status)) {
    result.exit_code = WEXITSTATUS(*status);
  }
  result.err = child->StderrText();
  return result;
}

std::vector<pid_t> ChildPids(pid_t parent) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    // "pid (comm) state ppid ...": comm may hold spaces, so skip past ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 1));
    std::string state;
    pid_t ppid = 0;
    if (fields >> state >> ppid && ppid == parent) {
      pids.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return pids;
}

std::string CommandLine(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline",
                   std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  std::string out = text.str();
  for (char& c : out) {
    if (c == '\0') c = ' ';
  }
  return out;
}

std::vector<std::string> CommandLineArgs(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline",
                   std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) {
    if (!arg.empty()) args.push_back(arg);
  }
  return args;
}

std::unique_ptr<ChildProcess> RestartServer(
    const std::vector<std::string>& argv, const std::string& address,
    const std::string& dir) {
  std::vector<std::string> args;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    // "--flag value" or "--flag=value" becomes "--flag=<value>".
    auto replace = [&](const std::string& flag, const std::string& value) {
      if (a == flag && i + 1 < argv.size()) {
        args.push_back(flag + "=" + value);
        ++i;
        return true;
      }
      if (a.rfind(flag + "=", 0) == 0) {
        args.push_back(flag + "=" + value);
        return true;
      }
      return false;
    };
    if (replace("--listen", address)) continue;
    if (replace("--port_file", dir + "/restarted.port")) continue;
    if (replace("--metrics_port_file", dir + "/restarted.metrics_port")) {
      continue;
    }
    args.push_back(a);
  }
  return ChildProcess::Start(args);
}

bool ProcessExists(pid_t pid) { return kill(pid, 0) == 0 || errno != ESRCH; }

}  // namespace moe::testing
