// Online expert rebalancing (EPLB) on a real cluster: processes on
// 127.0.0.1 started by the real moe-cluster, four expert servers, a
// generated Mixtral-shaped model whose gates favour experts 0 and 4 (both
// placed on expert server 0), and moe-loadgen's random prompts. Checks:
//   * the workload is skewed: server 0 computes most slots;
//   * a rebalance while moe-loadgen runs and a greedy stream is open loses
//     no request, and the stream's tokens equal the single-process
//     engine's, as do those of a request before and after;
//   * the measured imbalance (max over mean of the slots each server
//     computed) falls to what the rebalance predicted;
//   * a SIGKILLed expert server restarted with its first --experts list is
//     given what the router's new placement assigns it before it takes
//     work, and then takes work, with the same tokens.
// Twice: with the router dispatching the MoE steps, and with the attention
// server dispatching them itself (--moe_dispatch=direct), which follows the
// router's placement (WatchPlacement).
// Prints what it measured ("[eplb] ...") for the closing note.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/engine.h"
#include "core/expert_list.h"
#include "core/model_generator.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "moe/v1/expert.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/background_stream.h"
#include "tests/cluster_checks.h"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/process_util.h"
#include "tests/reliability_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::BackgroundStream;
using ::moe::testing::LaunchedCluster;
using ::moe::testing::ProcessResult;

constexpr int kServers = 4;

// Slots each expert server computed between two readings of SlotsSoFar.
std::vector<double> SlotsBetween(const std::vector<double>& from,
                                 const std::vector<double>& to) {
  std::vector<double> slots;
  for (size_t s = 0; s < to.size(); ++s) slots.push_back(to[s] - from[s]);
  return slots;
}

// Max over mean of `slots`; 0 when nothing was computed.
double Imbalance(const std::vector<double>& slots) {
  double max = 0, sum = 0;
  for (double s : slots) {
    max = std::max(max, s);
    sum += s;
  }
  return sum > 0 ? max / (sum / static_cast<double>(slots.size())) : 0;
}

class EplbE2eTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new testing::TempDir();
    GeneratorSpec spec;
    spec.config = SmallConfig(ModelFamily::kMixtral);
    spec.hot_experts = {0, 4};
    spec.hot_gate_bias = 6;
    spec.seed = 3;
    const absl::Status generated = GenerateModel(model_dir_->path(), spec);
    ASSERT_TRUE(generated.ok()) << generated;
    engine_ = testing::LoadReferenceEngine(model_dir_->path()).release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete model_dir_;
  }

  void SetUp() override {
    // Automatic placement deals (layer, expert) pairs to servers in turn,
    // so experts 0 and 4 of both layers land on expert server 0.
    const std::string topology = dir_.Join("topology.json");
    testing::WriteFileOrDie(
        topology, absl::StrCat(R"({
      "name": "eplb",
      "expert_servers": 4,
      "expert_threads": 1,
      "attention_servers": [{"moe_dispatch": ")",
                               GetParam(), R"("}]
    })"));
    cluster_ = LaunchedCluster::Start(topology, model_dir_->path());
    ASSERT_NE(cluster_, nullptr);
  }

  // Slots sent to each expert server so far, by the server that dispatches
  // the MoE steps: the router, or the attention server itself
  // (moe_router_dispatched_slots_total on its /metrics).
  std::vector<double> SlotsSoFar() {
    const std::string dispatcher =
        GetParam() == "direct" ? "attention-0" : "router";
    const std::optional<std::string> text =
        testing::HttpGet(cluster_->metrics_url(dispatcher));
    EXPECT_TRUE(text.has_value()) << dispatcher << "'s /metrics";
    std::vector<double> slots;
    for (int s = 0; s < kServers; ++s) {
      const std::string address =
          cluster_->address(absl::StrCat("expert-", s));
      slots.push_back(testing::SeriesValue(
          text.value_or(""), "moe_router_dispatched_slots_total",
          absl::StrCat("server=\"", address, "\"")));
    }
    return slots;
  }

  v1::RouterStats Stats() {
    v1::RouterStats stats;
    grpc::ClientContext context;
    const grpc::Status status =
        cluster_->router().GetStats(&context, v1::GetRouterStatsRequest(), &stats);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return stats;
  }

  // moe-loadgen's command line: `requests` random prompts (fixed seed), at
  // most 4 at a time, 24 prompt and 16 output tokens on average.
  std::vector<std::string> LoadgenArgs(int requests, int seed,
                                       const std::string& json) {
    return {MOE_LOADGEN_BIN, "--gateway", cluster_->address("gateway"),
            "--progress=false", "--num-requests", std::to_string(requests),
            "--arrival", "concurrency", "--max-concurrency", "4",
            "--input-len", "24", "--output-len", "16", "--seed",
            std::to_string(seed), "--json", json};
  }

  // The run of moe-loadgen's JSON at `path`; EXPECTs every request to have
  // completed.
  void ExpectNoFailures(const std::string& path, int requests) {
    std::ifstream in(path);
    const nlohmann::json result = nlohmann::json::parse(in, nullptr, false);
    ASSERT_FALSE(result.is_discarded()) << "not JSON: " << path;
    const nlohmann::json& run = result["runs"][0];
    EXPECT_EQ(run["completed"], requests) << run.dump();
    EXPECT_EQ(run["failed"], 0) << run["errors"].dump();
  }

  // Runs moe-loadgen to the end (LoadgenArgs; its JSON in `name`.json),
  // EXPECTs every request to complete, and returns the slots each expert
  // server computed meanwhile.
  std::vector<double> RunLoadgen(int requests, int seed,
                                 const std::string& name) {
    const std::vector<double> start = SlotsSoFar();
    const std::string json = dir_.Join(name + ".json");
    const ProcessResult run =
        testing::RunProcess(LoadgenArgs(requests, seed, json), {}, 600);
    EXPECT_EQ(run.exit_code, 0) << run.err;
    ExpectNoFailures(json, requests);
    return SlotsBetween(start, SlotsSoFar());
  }

  // A fixed greedy request's tokens through the gateway, checked against
  // the engine's.
  void ExpectFixedRequestMatches(const std::string& when) {
    const testing::StreamResult r = testing::RunGenerate(
        cluster_->gateway(), testing::GreedyRequest(prompt_, kMaxTokens), 300);
    ASSERT_TRUE(r.status.ok()) << when << ": " << r.status.error_message();
    EXPECT_EQ(r.tokens, Reference()) << when;
  }

  const std::vector<int32_t>& Reference() {
    if (reference_.empty()) {
      reference_ = testing::EngineTokens(*engine_, prompt_, kMaxTokens);
    }
    return reference_;
  }

  // The experts expert server `address` hosts (its own GetPlacement).
  std::optional<std::set<std::pair<int, int>>> Hosted(
      const std::string& address) {
    auto stub = v1::ExpertService::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    v1::Placement placement;
    if (!stub->GetPlacement(&context, v1::GetPlacementRequest(), &placement)
             .ok()) {
      return std::nullopt;
    }
    return ExpertSet(placement.experts());
  }

  static std::set<std::pair<int, int>> ExpertSet(
      const google::protobuf::RepeatedPtrField<v1::ExpertId>& ids) {
    std::set<std::pair<int, int>> out;
    for (const v1::ExpertId& id : ids) out.emplace(id.layer(), id.expert());
    return out;
  }

  static constexpr int kMaxTokens = 24;
  static testing::TempDir* model_dir_;
  static Engine* engine_;
  testing::TempDir dir_;
  std::unique_ptr<LaunchedCluster> cluster_;
  const std::vector<int32_t> prompt_ = {1, 17, 93, 211, 5, 64, 300, 8};
  std::vector<int32_t> reference_;
};

testing::TempDir* EplbE2eTest::model_dir_ = nullptr;
Engine* EplbE2eTest::engine_ = nullptr;

TEST_P(EplbE2eTest, RebalancingUnderLoadBalancesAsPredictedAndChangesNoToken) {
  ExpectFixedRequestMatches("before the load");

  // The skewed workload, on the placement the cluster started with.
  const std::vector<double> warm_slots = RunLoadgen(16, 1, "warm");
  const double measured_before = Imbalance(warm_slots);
  EXPECT_GE(measured_before, 2.5)
      << "the workload is not skewed: server 0 computed " << warm_slots[0]
      << " slots";

  // Rebalance while moe-loadgen runs and a greedy stream is open.
  std::unique_ptr<testing::ChildProcess> during = testing::ChildProcess::Start(
      LoadgenArgs(24, 2, dir_.Join("during.json")));
  ASSERT_NE(during, nullptr);
  BackgroundStream stream(cluster_->gateway(),
                          testing::GreedyRequest(prompt_, kMaxTokens));
  ASSERT_TRUE(testing::Eventually([&] { return stream.tokens_so_far() > 0; },
                                  300))
      << "the greedy stream never started";
  v1::RebalanceResponse rebalance;
  {
    grpc::ClientContext context;
    const grpc::Status status = cluster_->router().Rebalance(
        &context, v1::RebalanceRequest(), &rebalance);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  const int stream_tokens_at_switch = stream.tokens_so_far();
  const std::optional<int> loadgen_exit = during->Wait(600);
  ASSERT_TRUE(loadgen_exit.has_value()) << "moe-loadgen did not finish";
  EXPECT_EQ(*loadgen_exit, 0) << during->StderrText();
  ExpectNoFailures(dir_.Join("during.json"), 24);
  const testing::StreamResult& streamed = stream.Finish();
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.tokens, Reference()) << "the stream open during the rebalance";

  ASSERT_TRUE(rebalance.applied()) << rebalance.reason();
  EXPECT_GE(rebalance.imbalance_before(), 2.5);
  EXPECT_LE(rebalance.imbalance_after(), 1.5);
  EXPECT_GT(rebalance.loaded(), 0);

  // The same workload again, on the new placement.
  const std::vector<double> after_slots = RunLoadgen(16, 1, "after");
  const double measured_after = Imbalance(after_slots);
  // Both layers route alike, so the servers' totals show the per-layer
  // ratio; the window's prompts and these differ, hence a margin.
  EXPECT_NEAR(measured_before, rebalance.imbalance_before(),
              0.1 * rebalance.imbalance_before());
  // Replicas of an expert share its tokens evenly in the prediction; the
  // router picks the least busy replica per slot, which depends on which
  // requests overlap, hence a wider margin after.
  EXPECT_NEAR(measured_after, rebalance.imbalance_after(),
              0.15 * rebalance.imbalance_after());
  ExpectFixedRequestMatches("after the rebalance");
  std::printf(
      "[eplb %s] imbalance measured %.3f -> %.3f, predicted %.3f -> %.3f; %d "
      "experts loaded, %d unloaded in %.3f s while moe-loadgen ran (0 "
      "failed); the open stream had %d of %d tokens at the switch\n",
      GetParam().c_str(), measured_before, measured_after, rebalance.imbalance_before(),
      rebalance.imbalance_after(), rebalance.loaded(), rebalance.unloaded(),
      rebalance.seconds(), stream_tokens_at_switch, kMaxTokens);

  // Expert server 0 dies and comes back with its first --experts list; the
  // router gives it what the new placement assigns it before it takes work.
  const std::vector<std::string> names = cluster_->names();
  const std::string victim_name = "expert-0";
  ASSERT_NE(std::find(names.begin(), names.end(), victim_name), names.end());
  const std::string victim = cluster_->address(victim_name);
  const pid_t pid = cluster_->pid(victim_name);
  ASSERT_GT(pid, 0);
  const std::vector<std::string> argv = testing::CommandLineArgs(pid);
  ASSERT_FALSE(argv.empty());
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  // Gone (the launcher reaped it), so that nothing below reaches it.
  ASSERT_TRUE(testing::Eventually([&] {
    return cluster_->launcher_stderr().find(absl::StrCat(
               victim_name, " (pid ", pid, ") exited")) != std::string::npos;
  })) << "the launcher never saw " << victim_name << " exit";
  std::unique_ptr<testing::ChildProcess> restarted =
      testing::RestartServer(argv, victim, dir_.path());
  ASSERT_NE(restarted, nullptr);
  const std::set<std::pair<int, int>> placed =
      ExpertSet(Stats().servers(0).experts());
  // It comes back with the list it was first started with, which the
  // rebalance changed.
  std::set<std::pair<int, int>> first_list;
  for (const std::string& arg : argv) {
    if (arg.rfind("--experts=", 0) != 0) continue;
    absl::StatusOr<ExpertList> list = ParseExpertList(arg.substr(10));
    ASSERT_TRUE(list.ok()) << list.status();
    first_list = list->experts;
  }
  EXPECT_NE(first_list, placed) << "the rebalance left expert server 0 as it was";
  ASSERT_TRUE(testing::Eventually([&] {
    const std::optional<std::set<std::pair<int, int>>> hosted =
        Hosted(victim);
    return Stats().servers(0).up() && hosted == placed;
  }, 300)) << "the restarted expert server never got its assigned experts";
  ExpectFixedRequestMatches("after the restart");
  const std::vector<double> last_slots = RunLoadgen(8, 3, "last");
  EXPECT_GT(last_slots[0], 0) << "the restarted server takes no work";
  std::printf("[eplb %s] expert server 0 restarted with its first list "
              "hosts the %d experts the router assigns it and computed %.0f "
              "of %.0f slots after\n",
              GetParam().c_str(), static_cast<int>(placed.size()), last_slots[0],
              last_slots[0] + last_slots[1] + last_slots[2] + last_slots[3]);
  restarted->Signal(SIGTERM);
  restarted->Wait(30);
}

INSTANTIATE_TEST_SUITE_P(Dispatch, EplbE2eTest,
                         ::testing::Values("router", "direct"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace moe
