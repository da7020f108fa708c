#include "tools/moe_cluster/cluster_launcher.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/rpc/channel_util.h"
#include "tools/moe_cluster/process_supervisor.h"
#include "tools/moe_cluster/prometheus_targets.h"

namespace moe::cluster {
namespace {

constexpr int kLogTailLines = 20;
// How long one health poll may take, so that child exits and signals are
// noticed promptly while waiting.
constexpr double kHealthPollSeconds = 0.25;
constexpr absl::Duration kIdlePoll = absl::Milliseconds(20);

std::optional<int> ReadPortFile(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  int port = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port) || port <= 0 ||
      port > 65535) {
    return std::nullopt;
  }
  return port;
}

// The address clients use for a server listening on `listen`: a wildcard
// host is reached through loopback.
std::string ConnectAddress(const std::string& listen, int port) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    host = "127.0.0.1";
  }
  return absl::StrCat(host, ":", port);
}

void PrintStderr(const std::string& text) {
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

void PrintLogTail(const std::string& log_path) {
  const std::string tail = LogTail(log_path, kLogTailLines);
  if (tail.empty()) {
    PrintStderr(absl::StrCat("moe-cluster: (", log_path, " is empty)"));
    return;
  }
  std::string indented;
  for (absl::string_view line : absl::StrSplit(tail, '\n')) {
    if (!line.empty()) absl::StrAppend(&indented, "  | ", line, "\n");
  }
  std::fprintf(stderr, "moe-cluster: last lines of %s:\n%s", log_path.c_str(),
               indented.c_str());
  std::fflush(stderr);
}

class ClusterRun {
 public:
  ClusterRun(const std::vector<ServerLaunch>& launches,
             const LauncherOptions& options)
      : launches_(launches), options_(options) {}

  int Run();

 private:
  enum class Outcome { kReady, kFailed, kStopRequested };

  // A started server waiting to serve.
  struct Pending {
    size_t launch = 0;
    int child = 0;
    std::string port_file;
    std::string metrics_port_file;
    std::string http_port_file;  // the gateway's, when its HTTP API is on
    std::optional<std::string> address;
    std::string problem = "no port file yet";
  };

  Outcome StartStage(Stage stage);
  Outcome WaitForStage(std::vector<Pending> pending);
  void ReportStartupExit(const ChildExit& exit);
  void PrintReady();
  void Supervise();
  void Stop();

  const std::vector<ServerLaunch>& launches_;
  const LauncherOptions& options_;
  ProcessSupervisor supervisor_;
  SignalWaiter waiter_;
  absl::Time deadline_;
  std::map<size_t, std::string> addresses_;  // launch index -> address
  std::map<size_t, std::string> metrics_;    // launch index -> host:port
  std::map<size_t, std::string> http_;       // launch index -> host:port
};

int ClusterRun::Run() {
  deadline_ = absl::Now() + absl::Seconds(options_.startup_timeout_seconds);
  for (int stage = 0; stage < kNumStages; ++stage) {
    const Outcome outcome = StartStage(static_cast<Stage>(stage));
    if (outcome == Outcome::kFailed) {
      PrintStderr(
          "moe-cluster: start-up failed; stopping the servers started so far");
      Stop();
      return 1;
    }
    if (outcome == Outcome::kStopRequested) {
      PrintStderr("moe-cluster: stop requested during start-up");
      Stop();
      std::printf("stopped\n");
      std::fflush(stdout);
      return 0;
    }
  }
  PrintReady();
  Supervise();
  Stop();
  std::printf("stopped\n");
  std::fflush(stdout);
  return 0;
}

ClusterRun::Outcome ClusterRun::StartStage(Stage stage) {
  // The addresses of the previous stage, in launch order.
  std::vector<Dependency> dependencies;
  for (size_t i = 0; i < launches_.size(); ++i) {
    if (static_cast<int>(launches_[i].stage) == static_cast<int>(stage) - 1) {
      dependencies.push_back({addresses_[i], launches_[i].role});
    }
  }
  std::vector<Pending> pending;
  for (size_t i = 0; i < launches_.size(); ++i) {
    const ServerLaunch& launch = launches_[i];
    if (launch.stage != stage) continue;
    Pending p;
    p.launch = i;
    p.port_file = absl::StrCat(options_.log_dir, "/", launch.name, ".port");
    std::remove(p.port_file.c_str());  // stale, from an earlier run
    std::vector<std::string> args = WithDependencies(launch, dependencies);
    args.push_back(absl::StrCat("--listen=", stage == Stage::kGateway
                                                 ? options_.gateway_listen
                                                 : "127.0.0.1:0"));
    args.push_back(absl::StrCat("--port_file=", p.port_file));
    p.metrics_port_file =
        absl::StrCat(options_.log_dir, "/", launch.name, ".metrics_port");
    std::remove(p.metrics_port_file.c_str());
    args.push_back("--metrics_port=0");
    args.push_back(absl::StrCat("--metrics_port_file=", p.metrics_port_file));
    if (stage == Stage::kGateway && options_.gateway_http_port >= 0) {
      p.http_port_file =
          absl::StrCat(options_.log_dir, "/", launch.name, ".http_port");
      std::remove(p.http_port_file.c_str());
      args.push_back(absl::StrCat("--http_port=", options_.gateway_http_port));
      args.push_back(absl::StrCat("--http_port_file=", p.http_port_file));
    }
    absl::StatusOr<int> child = supervisor_.Spawn(
        launch.name, absl::StrCat(options_.bin_dir, "/", launch.binary), args,
        absl::StrCat(options_.log_dir, "/", launch.name, ".log"),
        static_cast<int>(launch.stage));
    if (!child.ok()) {
      PrintStderr(absl::StrCat("moe-cluster: ", launch.name, ": ",
                               child.status().message()));
      return Outcome::kFailed;
    }
    p.child = *child;
    pending.push_back(std::move(p));
  }
  return WaitForStage(std::move(pending));
}

ClusterRun::Outcome ClusterRun::WaitForStage(std::vector<Pending> pending) {
  while (!pending.empty()) {
    // Any exit during start-up is a failure, also of an earlier stage.
    for (const ChildExit& exit : supervisor_.ReapExited()) {
      ReportStartupExit(exit);
      return Outcome::kFailed;
    }
    for (auto it = pending.begin(); it != pending.end();) {
      if (!it->address.has_value()) {
        if (std::optional<int> port = ReadPortFile(it->port_file)) {
          it->address =
              ConnectAddress(launches_[it->launch].stage == Stage::kGateway
                                 ? options_.gateway_listen
                                 : "127.0.0.1:0",
                             *port);
          it->problem = "not SERVING yet";
        }
      }
      if (it->address.has_value()) {
        absl::Status serving = WaitForServing(*it->address, kHealthPollSeconds);
        // The gateway writes its HTTP port file after its gRPC server is
        // up (SERVING can come first): it is ready once both are there.
        std::optional<int> http_port;
        if (serving.ok() && !it->http_port_file.empty()) {
          http_port = ReadPortFile(it->http_port_file);
          if (!http_port.has_value()) {
            serving = absl::UnavailableError(
                "SERVING, but its OpenAI API port is not written yet");
          }
        }
        if (serving.ok()) {
          addresses_[it->launch] = *it->address;
          // Written before the server started loading.
          if (std::optional<int> port = ReadPortFile(it->metrics_port_file)) {
            metrics_[it->launch] = ConnectAddress(
                launches_[it->launch].stage == Stage::kGateway
                    ? options_.gateway_listen
                    : "127.0.0.1:0",
                *port);
          }
          if (http_port.has_value()) {
            http_[it->launch] =
                ConnectAddress(options_.gateway_listen, *http_port);
          }
          it = pending.erase(it);
          continue;
        }
        it->problem = std::string(serving.message());
      }
      ++it;
    }
    if (pending.empty()) break;
    if (absl::Now() >= deadline_) {
      for (const Pending& p : pending) {
        PrintStderr(absl::StrCat(
            "moe-cluster: ", supervisor_.name(p.child), " (pid ",
            supervisor_.pid(p.child), ") did not become ready within ",
            options_.startup_timeout_seconds, " s (", p.problem,
            "); log: ", supervisor_.log_path(p.child)));
        PrintLogTail(supervisor_.log_path(p.child));
      }
      return Outcome::kFailed;
    }
    const int signal = waiter_.Wait(kIdlePoll);
    if (signal == SIGINT || signal == SIGTERM) return Outcome::kStopRequested;
  }
  return Outcome::kReady;
}

void ClusterRun::ReportStartupExit(const ChildExit& exit) {
  PrintStderr(absl::StrCat("moe-cluster: ", exit.name, " (pid ", exit.pid,
                           ") exited during start-up with status ",
                           DescribeWaitStatus(exit.wait_status),
                           "; log: ", exit.log_path));
  PrintLogTail(exit.log_path);
}

void ClusterRun::PrintReady() {
  std::string out;
  for (size_t i = 0; i < launches_.size(); ++i) {
    const ServerLaunch& launch = launches_[i];
    absl::StrAppend(&out, launch.name, ": ", addresses_[i]);
    if (!launch.detail.empty()) absl::StrAppend(&out, " (", launch.detail, ")");
    if (auto it = metrics_.find(i); it != metrics_.end()) {
      absl::StrAppend(&out, " metrics http://", it->second, "/metrics");
    }
    if (auto it = http_.find(i); it != http_.end()) {
      absl::StrAppend(&out, " openai ",
                      options_.gateway_http_tls ? "https://" : "http://",
                      it->second, "/v1");
    }
    absl::StrAppend(&out, "\n");
  }
  if (!options_.prometheus_targets_dir.empty()) {
    std::vector<MetricsTarget> targets;
    for (const auto& [i, address] : metrics_) {
      targets.push_back({launches_[i].name, launches_[i].binary,
                         launches_[i].role, address});
    }
    if (absl::Status s =
            WritePrometheusTargets(options_.prometheus_targets_dir, targets);
        !s.ok()) {
      PrintStderr(absl::StrCat("moe-cluster: ", s.message()));
    } else {
      absl::StrAppend(&out, "prometheus targets: ",
                      options_.prometheus_targets_dir, "\n");
    }
  }
  absl::StrAppend(&out, "ready\n");
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
}

void ClusterRun::Supervise() {
  while (true) {
    const int signal = waiter_.Wait(absl::Seconds(1));
    for (const ChildExit& exit : supervisor_.ReapExited()) {
      PrintStderr(absl::StrCat("moe-cluster: ", exit.name, " (pid ", exit.pid,
                               ") exited with status ",
                               DescribeWaitStatus(exit.wait_status),
                               "; log: ", exit.log_path));
    }
    if (signal == SIGINT || signal == SIGTERM) {
      PrintStderr(
          absl::StrCat("moe-cluster: ", signal == SIGINT ? "SIGINT" : "SIGTERM",
                       " received, stopping the cluster"));
      return;
    }
  }
}

void ClusterRun::Stop() {
  const ProcessSupervisor::StopResult result =
      supervisor_.StopAll(absl::Seconds(options_.grace_seconds), waiter_);
  for (const std::string& name : result.killed) {
    PrintStderr(absl::StrCat(
        "moe-cluster: ", name,
        result.hurried ? " killed (a second stop signal cut the drain short)"
                       : absl::StrCat(" did not stop within ",
                                      options_.grace_seconds, " s; killed")));
  }
}

}  // namespace

int RunCluster(const std::vector<ServerLaunch>& launches,
               const LauncherOptions& options) {
  ClusterRun run(launches, options);
  return run.Run();
}

std::string LogTail(const std::string& path, int lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  // Only the end of a long log matters.
  constexpr std::streamoff kMaxBytes = 64 << 10;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(size > kMaxBytes ? size - kMaxBytes : 0);
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> all =
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(text.str()), '\n');
  if (all.size() == 1 && all[0].empty()) return "";
  const size_t first =
      all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  return absl::StrJoin(all.begin() + first, all.end(), "\n") + "\n";
}

}  // namespace moe::cluster
