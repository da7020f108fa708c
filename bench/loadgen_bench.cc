#include "bench/loadgen_bench.h"

#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/subprocess.h"
#include "nlohmann/json.hpp"

namespace moe::bench {
namespace {

constexpr const char* kServers[] = {"gateway", "attention_server", "router",
                                    "expert_server"};

double ServersCpuSeconds(const BenchCluster& cluster) {
  double seconds = 0;
  for (const char* binary : kServers) seconds += cluster.CpuSeconds(binary);
  return seconds;
}

}  // namespace

LoadgenCpuResult MeasureLoadgenCpu(BenchCluster& cluster,
                                   const std::string& loadgen,
                                   const std::string& work_dir, int requests,
                                   int concurrency) {
  const std::string json = absl::StrCat(work_dir, "/loadgen.json");
  const std::string log = absl::StrCat(work_dir, "/loadgen.log");
  const std::vector<std::string> argv = {
      loadgen, "--gateway", cluster.address("gateway"), "--arrival",
      "concurrency", "--max-concurrency", absl::StrCat(concurrency),
      "--num-requests", absl::StrCat(requests), "--input-len", "32",
      "--output-len", "64", "--json", json, "--progress=false"};
  const double servers_before = ServersCpuSeconds(cluster);
  absl::StatusOr<std::unique_ptr<Subprocess>> run = Subprocess::Start(argv, log);
  if (!run.ok()) Die(absl::StrCat(loadgen, ": ", run.status().message()));
  // Its stdout (the table) is read to the end, so it never blocks on it.
  while ((*run)->ReadLine(600).ok()) {
  }
  absl::StatusOr<int> code = (*run)->Wait(60);
  if (!code.ok() || *code != 0) {
    Die(absl::StrCat("moe-loadgen failed; see ", log));
  }
  const double servers = ServersCpuSeconds(cluster) - servers_before;
  std::ifstream in(json);
  const nlohmann::json result = nlohmann::json::parse(in, nullptr, false);
  if (result.is_discarded() || result["runs"].empty()) {
    Die(absl::StrCat("moe-loadgen wrote no results to ", json));
  }
  const nlohmann::json& r = result["runs"][0];
  LoadgenCpuResult out;
  out.tokens = r["output_tokens"].get<int64_t>();
  if (out.tokens <= 0 || r["failed"].get<int>() != 0) {
    Die(absl::StrCat("moe-loadgen's run had failures or no tokens; see ", json));
  }
  out.loadgen_cpu_us_per_token =
      r["loadgen_cpu_seconds"].get<double>() * 1e6 / out.tokens;
  out.servers_cpu_us_per_token = servers * 1e6 / out.tokens;
  out.fraction = out.servers_cpu_us_per_token > 0
                     ? out.loadgen_cpu_us_per_token / out.servers_cpu_us_per_token
                     : 0;
  out.output_token_throughput = r["output_token_throughput"].get<double>();
  return out;
}

}  // namespace moe::bench
