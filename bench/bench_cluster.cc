#include "bench/bench_cluster.h"

#include <signal.h>

#include <algorithm>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/rpc/channel_util.h"

namespace moe::bench {

std::unique_ptr<BenchCluster> BenchCluster::Start(const std::string& launcher,
                                                  const std::string& topology,
                                                  const std::string& model,
                                                  const std::string& work_dir,
                                                  const std::string& name) {
  const std::string logs = absl::StrCat(work_dir, "/logs-", name);
  std::error_code ec;
  std::filesystem::create_directories(logs, ec);
  const std::string stderr_path = absl::StrCat(work_dir, "/", name, ".stderr");
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(
      {launcher, "up", "--topology", topology, "--model", model, "--log_dir",
       logs},
      stderr_path);
  if (!process.ok()) Die(process.status().ToString());
  Note(absl::StrCat("starting the cluster of ", topology, ", logs in ", logs));
  std::vector<std::string> lines;
  absl::Status ready = (*process)->WaitForLine("ready", 300, &lines);
  if (!ready.ok()) {
    Die(absl::StrCat("the cluster of ", topology, " did not start: ",
                     ready.message(), "; see ", stderr_path, " and ", logs));
  }
  std::unique_ptr<BenchCluster> cluster(new BenchCluster());
  cluster->launcher_ = *std::move(process);
  for (const std::string& line : lines) {
    const size_t colon = line.find(": ");
    if (colon == std::string::npos) continue;
    std::string rest = line.substr(colon + 2);
    cluster->addresses_[line.substr(0, colon)] = rest.substr(0, rest.find(' '));
    if (const size_t openai = rest.find(" openai "); openai != std::string::npos) {
      const std::string url = rest.substr(openai + 8);
      cluster->openai_urls_[line.substr(0, colon)] = url.substr(0, url.find(' '));
    }
  }
  if (cluster->address("gateway").empty()) {
    Die("the launcher printed no gateway address");
  }
  cluster->gateway_ =
      v1::Inference::NewStub(MakeChannel(cluster->address("gateway")));
  return cluster;
}

BenchCluster::~BenchCluster() {
  gateway_.reset();  // idle connections would slow the drain
  launcher_->Signal(SIGTERM);
  absl::StatusOr<int> code = launcher_->Wait(120);
  if (!code.ok() || *code != 0) Note("a launcher did not stop cleanly");
}

double BenchCluster::CpuSeconds(const std::string& binary) const {
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  double seconds = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // Fields after the parenthesised command: state ppid ... utime stime.
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid != launcher_->pid()) continue;
    std::vector<std::string> fields;
    for (std::string f; rest >> f;) fields.push_back(f);
    // utime and stime are fields 14 and 15 of stat; 4 and 5 are read above.
    if (fields.size() < 13) continue;
    std::ifstream cmdline(entry.path() / "cmdline");
    std::string program;
    std::getline(cmdline, program, '\0');
    if (program.size() < binary.size() ||
        program.compare(program.size() - binary.size(), binary.size(),
                        binary) != 0) {
      continue;
    }
    seconds += (std::stod(fields[9]) + std::stod(fields[10])) / ticks;
  }
  return seconds;
}

std::string BenchCluster::openai_url(const std::string& name) const {
  auto it = openai_urls_.find(name);
  return it == openai_urls_.end() ? "" : it->second;
}

std::string BenchCluster::address(const std::string& name) const {
  auto it = addresses_.find(name);
  return it == addresses_.end() ? "" : it->second;
}

StreamTimes RunStream(v1::Inference::Stub& stub, const GenerationRequest& r) {
  v1::GenerateRequest request;
  for (int32_t id : r.prompt) request.add_prompt_ids(id);
  request.set_max_tokens(r.max_tokens);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  StreamTimes times;
  times.start = Clock::now();
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    const Clock::time_point now = Clock::now();
    if (response.has_usage()) times.usage = response.usage();
    if (response.token_ids_size() == 0) continue;
    if (times.tokens == 0) times.first = now;
    times.last = now;
    times.tokens += response.token_ids_size();
  }
  times.status = reader->Finish();
  return times;
}

double ClusterDecodeRun(v1::Inference::Stub& stub,
                        const std::vector<GenerationRequest>& requests) {
  std::vector<StreamTimes> times(requests.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < requests.size(); ++i) {
    clients.emplace_back([&, i] { times[i] = RunStream(stub, requests[i]); });
  }
  for (std::thread& t : clients) t.join();
  Clock::time_point first = times[0].first, last = times[0].last;
  int64_t decoded = 0;
  for (const StreamTimes& t : times) {
    if (!t.status.ok()) {
      Die(absl::StrCat("stream failed: ", t.status.error_message()));
    }
    first = std::max(first, t.first);
    last = std::max(last, t.last);
    decoded += t.tokens - 1;
  }
  const double seconds = std::chrono::duration<double>(last - first).count();
  return seconds > 0 ? decoded / seconds : 0;
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace moe::bench
