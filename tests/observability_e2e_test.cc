// The real scrape: a local cluster (1p1d) started by the real launcher with
// --prometheus_targets_dir, traffic through the gateway, then the real
// Prometheus server (Debian's `prometheus`) running the shipped
// deploy/prometheus/prometheus.yml against it. Through Prometheus' HTTP API
// the test asserts that every target is up, that the key series agree with
// what the client observed (tokens, requests, rejections, transfers, routed
// slots), that every metric of deploy/metrics.md and every metric the
// dashboards and alerts query is really exported, and that the alert rules
// load. `promtool check metrics` passes on every server's /metrics.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/process_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::ChildProcess;
using ::moe::testing::LaunchedCluster;
using ::moe::testing::ProcessResult;
using ::moe::testing::RunProcess;

// A port that was free a moment ago on 127.0.0.1, for Prometheus, which
// cannot report a port it picked itself.
int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// A running Prometheus server and its HTTP API (through curl).
class Prometheus {
 public:
  Prometheus(const std::string& config, const std::string& data_dir)
      : port_(FreeLoopbackPort()) {
    process_ = ChildProcess::Start(
        {"/usr/bin/prometheus", absl::StrCat("--config.file=", config),
         absl::StrCat("--storage.tsdb.path=", data_dir),
         absl::StrCat("--web.listen-address=127.0.0.1:", port_),
         "--log.level=warn"});
  }
  ~Prometheus() {
    if (process_ == nullptr) return;
    process_->Signal(SIGTERM);
    process_->Wait(30);
  }

  bool started() const { return process_ != nullptr && port_ > 0; }
  std::string stderr_text() const {
    return process_ != nullptr ? process_->StderrText() : "";
  }

  // GET /api/v1/<path> with the URL-encoded `args`; the answer's "data", or
  // null while the API does not answer successfully.
  nlohmann::json Api(const std::string& path,
                     const std::vector<std::string>& args = {}) const {
    // Timeouts against hangs only: a slow answer is still the answer.
    std::vector<std::string> argv = {"/usr/bin/curl", "-sf", "--max-time",
                                     "30", "--get"};
    for (const std::string& arg : args) {
      argv.push_back("--data-urlencode");
      argv.push_back(arg);
    }
    argv.push_back(absl::StrCat("http://127.0.0.1:", port_, "/api/v1/", path));
    const ProcessResult result = RunProcess(argv, {}, 60);
    if (result.exit_code != 0) return nullptr;
    nlohmann::json body = nlohmann::json::parse(result.out, nullptr, false);
    if (body.is_discarded() || body.value("status", "") != "success") {
      return nullptr;
    }
    return body["data"];
  }

  // The value of a query that yields one sample (e.g. sum(...)); NaN when
  // it yields none.
  double Scalar(const std::string& query) const {
    const nlohmann::json data = Api("query", {"query=" + query});
    if (data.is_null() || data["result"].empty()) return std::nan("");
    return std::stod(data["result"][0]["value"][1].get<std::string>());
  }

 private:
  int port_;
  std::unique_ptr<ChildProcess> process_;
};

// Polls `condition` every 250 ms (it queries servers); false after
// `seconds`.
bool Eventually(const std::function<bool()>& condition, double seconds) {
  return testing::Eventually(condition, seconds, /*poll_ms=*/250);
}

// A metric of deploy/metrics.md's tables.
struct DocumentedMetric {
  std::string name;
  bool histogram = false;
};

std::vector<DocumentedMetric> DocumentedMetrics() {
  std::ifstream in(std::string(MOE_SOURCE_DIR) + "/deploy/metrics.md");
  std::vector<DocumentedMetric> metrics;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `moe_", 0) != 0) continue;
    const std::vector<std::string> cells = absl::StrSplit(line, '|');
    DocumentedMetric metric;
    const absl::string_view name = absl::StripAsciiWhitespace(cells[1]);
    metric.name = std::string(name.substr(1, name.size() - 2));  // `name`
    metric.histogram = absl::StripAsciiWhitespace(cells[2]) == "histogram";
    metrics.push_back(metric);
  }
  return metrics;
}

class ObservabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    namespace fs = std::filesystem;
    const fs::path shipped = fs::path(MOE_SOURCE_DIR) / "deploy/prometheus";
    config_dir_ = dir_.Join("prometheus");
    fs::create_directories(config_dir_);
    for (const char* file : {"prometheus.yml", "alerts.yml"}) {
      fs::copy_file(shipped / file, fs::path(config_dir_) / file);
    }
    cluster_ = LaunchedCluster::Start(
        "deploy/local/1p1d.json", testing::FixtureDir("tiny-mixtral"),
        {absl::StrCat("--prometheus_targets_dir=", config_dir_, "/targets")});
    ASSERT_NE(cluster_, nullptr);
  }

  testing::TempDir dir_;
  std::string config_dir_;
  std::unique_ptr<LaunchedCluster> cluster_;
};

TEST_F(ObservabilityTest, PrometheusScrapesEveryServerAndAgreesWithTheClient) {
  // Every server's exposition passes promtool's checks.
  ASSERT_EQ(cluster_->names().size(), 6u);
  for (const std::string& name : cluster_->names()) {
    const std::string url = cluster_->metrics_url(name);
    ASSERT_FALSE(url.empty()) << name << " announced no metrics URL";
    const ProcessResult check =
        RunProcess({"/bin/sh", "-c",
                    absl::StrCat("/usr/bin/curl -sf ", url,
                                 " | /usr/bin/promtool check metrics")});
    EXPECT_EQ(check.exit_code, 0)
        << name << ": promtool check metrics:\n" << check.out << check.err;
  }

  // Traffic: one request first, so that the others' shared 32-token prefix
  // is in the prefill server's cache; then one the gateway refuses.
  std::vector<int32_t> prefix;
  for (int i = 0; i < 32; ++i) prefix.push_back(7 + i * 3);
  std::vector<std::vector<int32_t>> prompts;
  for (int r = 0; r < 5; ++r) {
    std::vector<int32_t> prompt = prefix;
    for (int i = 0; i <= r; ++i) prompt.push_back(100 + r * 10 + i);
    prompts.push_back(prompt);
  }
  std::vector<int64_t> received(prompts.size(), 0);
  auto run = [&](size_t r) {
    const testing::StreamResult result = testing::RunGenerate(
        cluster_->gateway(),
        testing::GreedyRequest(prompts[r], 4 + static_cast<int>(r) * 3));
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    received[r] = static_cast<int64_t>(result.tokens.size());
  };
  run(0);
  std::vector<std::thread> threads;
  for (size_t r = 1; r < prompts.size(); ++r) threads.emplace_back(run, r);
  for (std::thread& t : threads) t.join();
  int64_t tokens = 0;
  int64_t prompt_tokens = 0;
  for (size_t r = 0; r < prompts.size(); ++r) {
    tokens += received[r];
    prompt_tokens += static_cast<int64_t>(prompts[r].size());
  }
  EXPECT_EQ(testing::RunGenerate(cluster_->gateway(),
                                 testing::GreedyRequest({1, 2, 3}, 0))
                .status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(cluster_->WaitForIdleKv());

  Prometheus prometheus(config_dir_ + "/prometheus.yml", dir_.Join("data"));
  ASSERT_TRUE(prometheus.started());

  // Every target discovered from the launcher's files, and up.
  nlohmann::json targets;
  const bool all_up = Eventually(
      [&] {
        targets = prometheus.Api("targets");
        if (targets.is_null() || targets["activeTargets"].size() != 6) {
          return false;
        }
        for (const nlohmann::json& t : targets["activeTargets"]) {
          if (t["health"] != "up") return false;
        }
        return true;
      },
      60);
  ASSERT_TRUE(all_up) << "targets: " << targets.dump(1) << "\nprometheus:\n"
                      << prometheus.stderr_text();

  // Once a scrape after the traffic is in, the series agree with the client.
  const std::string generated = "sum(moe_gateway_generation_tokens_total)";
  ASSERT_TRUE(Eventually(
      [&] {
        return prometheus.Scalar(generated) == static_cast<double>(tokens);
      },
      120))
      << generated << " = " << prometheus.Scalar(generated) << ", but the "
      << "client received " << tokens << " tokens";
  const double requests = static_cast<double>(prompts.size());
  EXPECT_EQ(prometheus.Scalar("sum(moe_gateway_prompt_tokens_total)"),
            static_cast<double>(prompt_tokens));
  EXPECT_EQ(prometheus.Scalar("sum(moe_gateway_requests_total{code=\"OK\","
                              "finish_reason=\"length\"})"),
            requests);
  EXPECT_EQ(prometheus.Scalar(
                "sum(moe_gateway_requests_total{code=\"INVALID_ARGUMENT\"})"),
            1.0);
  EXPECT_EQ(prometheus.Scalar("sum(moe_gateway_rejections_total{reason="
                              "\"invalid_argument\"})"),
            1.0);
  EXPECT_EQ(
      prometheus.Scalar("sum(moe_gateway_time_to_first_token_seconds_count)"),
      requests);
  EXPECT_EQ(
      prometheus.Scalar("sum(moe_gateway_e2e_request_latency_seconds_count)"),
      requests);
  EXPECT_EQ(prometheus.Scalar("sum(moe_gateway_requests_running) + "
                              "sum(moe_gateway_requests_waiting)"),
            0.0);
  // The prefill server samples each first token, the decode server the rest.
  EXPECT_EQ(prometheus.Scalar("sum(moe_attention_generation_tokens_total)"),
            static_cast<double>(tokens));
  EXPECT_EQ(prometheus.Scalar("sum(moe_attention_generation_tokens_total{"
                              "role=\"prefill\"})"),
            requests);
  for (const char* direction : {"sent", "received"}) {
    EXPECT_EQ(prometheus.Scalar(absl::StrCat(
                  "sum(moe_attention_kv_transfers_total{direction=\"",
                  direction, "\",outcome=\"ok\"})")),
              requests)
        << direction;
  }
  EXPECT_EQ(prometheus.Scalar("sum(moe_attention_kv_transfer_bytes_total{"
                              "direction=\"sent\"})"),
            prometheus.Scalar("sum(moe_attention_kv_transfer_bytes_total{"
                              "direction=\"received\"})"));
  EXPECT_GT(
      prometheus.Scalar("sum(moe_attention_prefix_cache_hits_tokens_total)"),
      0.0)
      << "the shared 32-token prefix was not reused";
  EXPECT_EQ(prometheus.Scalar("sum(moe_attention_kv_blocks_used)"), 0.0);
  EXPECT_EQ(prometheus.Scalar("sum(moe_router_tokens_total)"),
            prometheus.Scalar("sum(moe_expert_tokens_total)"));
  EXPECT_EQ(prometheus.Scalar("sum(moe_router_tokens_total)"),
            prometheus.Scalar("sum(moe_router_dispatched_slots_total)"));
  EXPECT_EQ(prometheus.Scalar("min(moe_router_expert_server_up)"), 1.0);
  EXPECT_EQ(prometheus.Scalar("count(moe_router_expert_server_up)"), 2.0);

  // Everything documented, and everything the dashboards and alerts query,
  // is exported.
  const nlohmann::json names = prometheus.Api("label/__name__/values");
  ASSERT_FALSE(names.is_null());
  const std::set<std::string> exported(names.begin(), names.end());
  int histograms = 0;
  for (const DocumentedMetric& metric : DocumentedMetrics()) {
    const std::string series =
        metric.histogram ? metric.name + "_count" : metric.name;
    EXPECT_TRUE(exported.contains(series))
        << metric.name << " (deploy/metrics.md) is not exported";
    histograms += metric.histogram ? 1 : 0;
  }
  EXPECT_GE(histograms, 8);
  const ProcessResult listed = RunProcess(
      {"/usr/bin/node",
       std::string(MOE_SOURCE_DIR) + "/tests/observability/check_dashboards.js",
       "--list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  int queried = 0;
  for (absl::string_view name : absl::StrSplit(listed.out, '\n')) {
    if (name.empty()) continue;
    ++queried;
    const std::string base(name);
    EXPECT_TRUE(exported.contains(base) || exported.contains(base + "_count"))
        << base << " is queried by a dashboard or alert but not exported";
  }
  EXPECT_GT(queried, 30);

  // The shipped alert rules loaded and evaluate.
  const nlohmann::json rules = prometheus.Api("rules");
  ASSERT_FALSE(rules.is_null());
  int loaded = 0;
  for (const nlohmann::json& group : rules["groups"]) {
    for (const nlohmann::json& rule : group["rules"]) {
      ++loaded;
      EXPECT_NE(rule.value("health", ""), "err") << rule.dump(1);
    }
  }
  EXPECT_GE(loaded, 5);
}

}  // namespace
}  // namespace moe
