// A cluster started by the real launcher for a benchmark, and the client
// side of the measurements: streams with their timelines.
#ifndef MOE_BENCH_BENCH_CLUSTER_H_
#define MOE_BENCH_BENCH_CLUSTER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "core/generator.h"
#include "core/subprocess.h"
#include "moe/v1/generate.grpc.pb.h"

namespace moe::bench {

class BenchCluster {
 public:
  // `moe-cluster up --topology TOPOLOGY --model MODEL` with logs under
  // `work_dir`/logs-NAME; dies (with the log location) when it does not
  // come up.
  static std::unique_ptr<BenchCluster> Start(const std::string& launcher,
                                             const std::string& topology,
                                             const std::string& model,
                                             const std::string& work_dir,
                                             const std::string& name);
  // Stops the cluster (SIGTERM) and waits for it.
  ~BenchCluster();

  // The address of the server named `name` ("gateway", "decode-0", ...).
  std::string address(const std::string& name) const;
  // The OpenAI API's base URL of server `name` ("http://HOST:PORT/v1"),
  // empty when it announced none.
  std::string openai_url(const std::string& name = "gateway") const;
  v1::Inference::Stub& gateway() { return *gateway_; }
  // CPU seconds (user + system) used so far by the cluster's servers whose
  // program is `binary` ("expert_server", "attention_server", ...), from
  // /proc; 0 where /proc cannot tell.
  double CpuSeconds(const std::string& binary) const;

 private:
  BenchCluster() = default;
  std::unique_ptr<Subprocess> launcher_;
  std::map<std::string, std::string> addresses_;
  std::map<std::string, std::string> openai_urls_;
  std::unique_ptr<v1::Inference::Stub> gateway_;
};

// One greedy stream's client-side timeline.
struct StreamTimes {
  Clock::time_point start, first, last;
  int tokens = 0;
  grpc::Status status;
  v1::Usage usage;
  double ttft() const {
    return std::chrono::duration<double>(first - start).count();
  }
};

StreamTimes RunStream(v1::Inference::Stub& stub, const GenerationRequest& r);

// Decode tokens/s of `requests` run as concurrent streams: every stream's
// tokens after its first, over the time from the last stream's first token
// to the last stream's last token. Dies when a stream fails.
double ClusterDecodeRun(v1::Inference::Stub& stub,
                        const std::vector<GenerationRequest>& requests);

double Median(std::vector<double> values);

}  // namespace moe::bench

#endif  // MOE_BENCH_BENCH_CLUSTER_H_
