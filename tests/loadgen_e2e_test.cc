// moe-loadgen against a real local cluster (processes on 127.0.0.1 started by
// the real launcher): a fixed-count closed-loop run where every request is
// accounted for (completed + failed = sent), whose token counts equal the
// gateway's own Prometheus counters, and whose JSON holds every field
// tools/moe_loadgen/README.md documents; a run whose deadline is too short
// counts its failures by status code; a sweep writes its PNG plot.
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/launched_cluster.h"
#include "tests/reliability_util.h"
#include "tests/process_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::LaunchedCluster;
using ::moe::testing::ProcessResult;
using ::moe::testing::RunProcess;

// The dotted paths of the README's "JSON fields" table ("runs[].ttft_ms.p99").
std::vector<std::string> DocumentedFields() {
  std::ifstream in(std::string(MOE_SOURCE_DIR) + "/tools/moe_loadgen/README.md");
  std::vector<std::string> fields;
  std::string line;
  bool in_table = false;
  while (std::getline(in, line)) {
    if (line == "## JSON fields") in_table = true;
    if (!in_table || !absl::StartsWith(line, "| `")) continue;
    const size_t end = line.find('`', 3);
    fields.push_back(line.substr(3, end - 3));
  }
  return fields;
}

// Whether `path` ("a.b", "runs[].c") exists in `j` (in every run).
bool HasPath(const nlohmann::json& j, absl::string_view path) {
  const size_t dot = path.find('.');
  std::string head(path.substr(0, dot));
  const absl::string_view rest =
      dot == absl::string_view::npos ? "" : path.substr(dot + 1);
  if (absl::EndsWith(head, "[]")) {
    head.resize(head.size() - 2);
    if (!j.contains(head) || !j[head].is_array() || j[head].empty()) return false;
    for (const nlohmann::json& item : j[head]) {
      if (!rest.empty() && !HasPath(item, rest)) return false;
    }
    return true;
  }
  if (!j.is_object() || !j.contains(head)) return false;
  return rest.empty() || HasPath(j[head], rest);
}

class LoadgenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = LaunchedCluster::Start("deploy/local/1p1d.json",
                                      testing::FixtureDir("tiny-mixtral"));
    ASSERT_NE(cluster_, nullptr);
  }
  ProcessResult Loadgen(std::vector<std::string> args) {
    args.insert(args.begin(),
                {MOE_LOADGEN_BIN, "--gateway", cluster_->address("gateway"),
                 "--progress=false"});
    return RunProcess(args, {}, 300);
  }

  testing::TempDir dir_;
  std::unique_ptr<LaunchedCluster> cluster_;
};

TEST_F(LoadgenTest, AFixedRunAccountsForEveryRequestAndAgreesWithTheGateway) {
  const std::string json_path = dir_.Join("run.json");
  const std::string md_path = dir_.Join("run.md");
  const ProcessResult run = Loadgen(
      {"--num-requests", "24", "--arrival", "concurrency", "--max-concurrency",
       "6", "--input-len", "24", "--output-len", "12", "--length-distribution",
       "uniform", "--range-ratio", "0.5", "--shared-prefix-len", "32",
       "--num-prefixes", "2", "--goodput", "ttft:60000 tpot:60000", "--json",
       json_path, "--markdown", md_path});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(absl::StrContains(run.out, "| concurrency 6 | 24 | 0 |"))
      << run.out;

  std::ifstream in(json_path);
  const nlohmann::json result = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(result.is_discarded()) << "not JSON: " << json_path;
  const std::vector<std::string> fields = DocumentedFields();
  ASSERT_GT(fields.size(), 50u);
  for (const std::string& field : fields) {
    EXPECT_TRUE(HasPath(result, field)) << field << " is documented but missing";
  }
  ASSERT_EQ(result["runs"].size(), 1u);
  const nlohmann::json& r = result["runs"][0];
  EXPECT_EQ(r["sent"], 24);
  EXPECT_EQ(r["completed"].get<int>() + r["failed"].get<int>(), 24);
  EXPECT_EQ(r["failed"], 0) << r["errors"].dump();
  EXPECT_EQ(r["good_requests"], 24);
  EXPECT_EQ(r["ttft_ms"]["count"], 24);
  EXPECT_GT(r["cached_tokens"].get<int>(), 0) << "shared prefixes not reused";
  EXPECT_GT(r["loadgen_cpu_seconds"].get<double>(), 0);
  EXPECT_LE(r["ttft_ms"]["median"].get<double>(), r["ttft_ms"]["p90"].get<double>());
  EXPECT_LE(r["ttft_ms"]["p90"].get<double>(), r["ttft_ms"]["p99"].get<double>());

  // The gateway counted exactly what moe-loadgen received.
  const std::optional<std::string> scraped =
      testing::HttpGet(cluster_->metrics_url("gateway"));
  ASSERT_TRUE(scraped.has_value()) << cluster_->metrics_url("gateway");
  const std::string& metrics = *scraped;
  EXPECT_EQ(testing::SeriesValue(metrics, "moe_gateway_generation_tokens_total"),
            r["output_tokens"].get<double>());
  EXPECT_EQ(testing::SeriesValue(metrics, "moe_gateway_prompt_tokens_total"),
            r["input_tokens"].get<double>());
  EXPECT_EQ(testing::SeriesValue(metrics, "moe_gateway_requests_total", "code=\"OK\""),
            24.0);
  std::ifstream md(md_path);
  std::string table((std::istreambuf_iterator<char>(md)), {});
  EXPECT_TRUE(absl::StrContains(table, "| load | completed | failed |"));
}

TEST_F(LoadgenTest, RequestsPastTheirDeadlineAreCountedByStatusCode) {
  const std::string json_path = dir_.Join("late.json");
  const ProcessResult run =
      Loadgen({"--num-requests", "12", "--rate", "50", "--input-len", "16",
               "--output-len", "400", "--timeout", "0.05", "--json", json_path});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::ifstream in(json_path);
  const nlohmann::json r = nlohmann::json::parse(in)["runs"][0];
  EXPECT_EQ(r["completed"].get<int>() + r["failed"].get<int>(), 12);
  EXPECT_GT(r["failed"].get<int>(), 0);
  int counted = 0;
  for (const auto& [code, count] : r["errors"].items()) {
    EXPECT_EQ(code, "DEADLINE_EXCEEDED");
    counted += count.get<int>();
  }
  EXPECT_EQ(counted, r["failed"].get<int>());
  EXPECT_TRUE(cluster_->WaitForIdleKv()) << "cancelled requests leaked KV";
}

TEST_F(LoadgenTest, ASweepWritesOneRunPerRateAndAPlot) {
  const std::string json_path = dir_.Join("sweep.json");
  const std::string png = dir_.Join("sweep.png");
  const ProcessResult run = Loadgen(
      {"--num-requests", "8", "--sweep-rates", "20,40", "--arrival", "gamma",
       "--burstiness", "0.5", "--input-len", "16", "--output-len", "8",
       "--json", json_path, "--plot", png});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::ifstream in(json_path);
  const nlohmann::json result = nlohmann::json::parse(in);
  ASSERT_EQ(result["runs"].size(), 2u);
  EXPECT_EQ(result["runs"][0]["rate"], 20.0);
  EXPECT_EQ(result["runs"][1]["rate"], 40.0);
  EXPECT_EQ(result["runs"][1]["arrival"], "gamma");
  std::ifstream image(png, std::ios::binary);
  std::string magic(8, '\0');
  image.read(magic.data(), 8);
  EXPECT_EQ(magic, std::string("\x89PNG\r\n\x1a\n", 8)) << png;
}

TEST_F(LoadgenTest, BadInputIsRefusedNamingTheProblem) {
  const std::string trace = dir_.Join("trace.jsonl");
  testing::WriteFileOrDie(trace,
                          "{\"timestamp\": 0, \"prompt_ids\": [1], "
                          "\"output_length\": 2}\n{\"timestamp\": 1}\n");
  ProcessResult r = Loadgen({"--trace", trace});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "line 2")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "output_length")) << r.err;
  r = Loadgen({"--arrival", "uniform"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--arrival")) << r.err;
  r = Loadgen({"--goodput", "ttft:fast"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--goodput")) << r.err;
  r = Loadgen({"--rate", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "--rate")) << r.err;
  r = RunProcess({MOE_LOADGEN_BIN, "--gateway", "127.0.0.1:1", "--progress=false"},
                 {}, 60);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "cannot reach the gateway")) << r.err;
}

}  // namespace
}  // namespace moe
