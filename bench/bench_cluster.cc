#include "bench/bench_cluster.h"

#include <signal.h>

#include <algorithm>
#include <filesystem>
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
