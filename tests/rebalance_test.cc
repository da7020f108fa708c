// Online expert rebalancing in process: four real expert servers on
// loopback ports and a router. A skewed workload (every token the same
// hidden state, so each layer routes everything to two experts) leaves two
// servers idle; a Rebalance replicates the hot experts while a client keeps
// calling RunMoe, and
//   * no call fails and every output stays bit-identical to the
//     single-process engine's MoE step, before, during and after;
//   * the servers host what the router's new placement says, and the
//     measured imbalance falls to what the plan predicted;
//   * a second rebalance without new load moves nothing;
//   * a follower that copied the placement (an attention server with
//     --moe_dispatch=direct) gets the new one before the old experts are
//     unloaded, which waits for its acknowledgement; one that never
//     acknowledges leaves them loaded;
//   * restarted expert servers get what the new placement assigns them.
#include <atomic>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "core/checkpoint.h"
#include "core/local_moe_executor.h"
#include "core/model_weights.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/expert_server.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "moe/v1/router.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "router/router_server.h"
#include "tests/process_util.h"
#include "tests/rebalance_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

constexpr int kServers = 4;

class RebalanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string model = testing::FixtureDir("tiny-mixtral");
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(model);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    absl::StatusOr<ModelWeights> weights = LoadModelWeights(
        std::shared_ptr<Checkpoint>(*std::move(ckpt)), WeightSelection::Full());
    ASSERT_TRUE(weights.ok()) << weights.status();
    weights_ = *std::move(weights);
    const ModelConfig& c = weights_.config;
    RouterServerOptions router_options;
    for (int s = 0; s < kServers; ++s) {
      ExpertServerOptions options;
      options.engine.model_dir = model;
      for (int l = 0; l < c.num_layers; ++l) {
        if (!c.IsMoeLayer(l)) continue;
        for (int e = s; e < c.num_experts; e += kServers) {
          options.engine.experts.emplace(l, e);
        }
      }
      options.engine.num_threads = 1;
      first_lists_.push_back(options.engine.experts);
      absl::StatusOr<std::unique_ptr<ExpertServer>> server =
          ExpertServer::Start(options);
      ASSERT_TRUE(server.ok()) << server.status();
      router_options.expert_addresses.push_back(
          "127.0.0.1:" + std::to_string((*server)->port()));
      experts_.push_back(*std::move(server));
    }
    router_options.engine.model_dir = model;
    router_options.rebalance.min_gain = 0.1;
    // Probes often, so that restarted servers rejoin soon (the tests wait
    // for the rejoin itself, not for a time).
    router_options.health_probe_seconds = 0.2;
    router_options.rebalance.follower_timeout_seconds =
        follower_timeout_seconds_;
    if (window_seconds_ > 0) {
      router_options.rebalance.window_seconds = window_seconds_;
      // Samples only when the test says (SampleLoad), at its clock.
      router_options.rebalance.window_sample_seconds = 1e6;
      router_options.rebalance.clock = [this] {
        return absl::UnixEpoch() + absl::Seconds(fake_seconds_.load());
      };
    }
    absl::StatusOr<std::unique_ptr<RouterServer>> router =
        RouterServer::Start(router_options);
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = *std::move(router);
    stub_ = v1::RouterService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(router_->port()),
        grpc::InsecureChannelCredentials()));
    // The skewed batch: one hidden state, 12 times.
    batch_ = std::make_unique<testing::SkewedMoeBatch>(weights_, kTokens, 5);
    ASSERT_TRUE(batch_->ok());
  }

  // One RunMoe of the skewed batch on `layer`; "" when it equals the
  // engine's bit for bit, else what went wrong.
  std::string RunAndCompare(int layer) {
    return batch_->RunAndCompare(*stub_, layer);
  }

  std::vector<int> MoeLayers() const {
    std::vector<int> out;
    for (int l = 0; l < weights_.config.num_layers; ++l) {
      if (weights_.config.IsMoeLayer(l)) out.push_back(l);
    }
    return out;
  }

  // Max over mean of the slots each server computed since `before`.
  double MeasuredImbalance(const v1::RouterStats& before) {
    v1::RouterStats now;
    grpc::ClientContext context;
    EXPECT_TRUE(stub_->GetStats(&context, v1::GetRouterStatsRequest(), &now).ok());
    double max = 0, sum = 0;
    for (int s = 0; s < now.servers_size(); ++s) {
      const double slots = static_cast<double>(now.servers(s).slots() -
                                               before.servers(s).slots());
      max = std::max(max, slots);
      sum += slots;
    }
    return sum > 0 ? max / (sum / now.servers_size()) : 1.0;
  }

  v1::RouterStats Stats() {
    v1::RouterStats stats;
    grpc::ClientContext context;
    EXPECT_TRUE(stub_->GetStats(&context, v1::GetRouterStatsRequest(), &stats).ok());
    return stats;
  }

  grpc::Status Rebalance(bool force, v1::RebalanceResponse* response) {
    grpc::ClientContext context;
    v1::RebalanceRequest request;
    request.set_force(force);
    return stub_->Rebalance(&context, request, response);
  }

  // The placement a follower named `name` copies (GetDispatchConfig).
  v1::DispatchConfig CopyPlacement(const std::string& name) {
    v1::GetDispatchConfigRequest request;
    request.set_follower(name);
    v1::DispatchConfig config;
    grpc::ClientContext context;
    EXPECT_TRUE(stub_->GetDispatchConfig(&context, request, &config).ok());
    return config;
  }

  // One placement poll of follower `name`.
  v1::PlacementUpdate Watch(const std::string& name, uint64_t applied,
                            double hold_seconds) {
    v1::WatchPlacementRequest request;
    request.set_follower(name);
    request.set_applied_version(applied);
    request.set_hold_seconds(hold_seconds);
    v1::PlacementUpdate update;
    grpc::ClientContext context;
    const grpc::Status status = stub_->WatchPlacement(&context, request, &update);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return update;
  }

  static constexpr int kTokens = 12;
  // How long a rebalance waits for followers (a test of the timeout itself
  // shortens it; the others never wait for it).
  double follower_timeout_seconds_ = 600;
  // A sliding load window (0: since the last rebalance), on a fake clock.
  double window_seconds_ = 0;
  std::atomic<int64_t> fake_seconds_{0};
  ModelWeights weights_;
  std::vector<std::unique_ptr<ExpertServer>> experts_;
  // What each server was started with.
  std::vector<std::set<std::pair<int, int>>> first_lists_;
  std::unique_ptr<RouterServer> router_;
  std::unique_ptr<v1::RouterService::Stub> stub_;
  std::unique_ptr<testing::SkewedMoeBatch> batch_;
};

TEST_F(RebalanceTest, HotExpertsAreReplicatedWhileServingWithIdenticalOutputs) {
  const std::vector<int> layers = MoeLayers();
  ASSERT_FALSE(layers.empty());
  const v1::RouterStats start = Stats();
  for (int round = 0; round < 4; ++round) {
    for (int l : layers) ASSERT_EQ(RunAndCompare(l), "");
  }
  const double measured_before = MeasuredImbalance(start);
  EXPECT_GE(measured_before, 2.0) << "the workload is not skewed";

  // A client keeps calling while the experts move.
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0};
  std::atomic<int> bad_calls{0};
  std::string first_problem;  // written by the client before bad_calls
  std::thread client([&] {
    while (!stop.load()) {
      for (int l : layers) {
        const std::string problem = RunAndCompare(l);
        if (!problem.empty() && bad_calls.fetch_add(1) == 0) {
          first_problem = problem;
        }
        ++calls;
      }
    }
  });
  v1::RebalanceResponse response;
  const grpc::Status status = Rebalance(/*force=*/false, &response);
  // Calls after the switch, then stop.
  const int calls_at_switch = calls.load();
  while (calls.load() < calls_at_switch + 4 && bad_calls.load() == 0) {
    std::this_thread::yield();
  }
  stop.store(true);
  client.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(bad_calls.load(), 0) << first_problem;
  ASSERT_TRUE(response.applied()) << response.reason();
  EXPECT_GT(response.window_tokens(), 0);
  EXPECT_GE(response.imbalance_before(), 2.0);
  EXPECT_LT(response.imbalance_after(), response.imbalance_before() * 0.9);
  EXPECT_GT(response.loaded(), 0);

  // The servers host exactly the router's new placement.
  for (int s = 0; s < kServers; ++s) {
    EXPECT_EQ(testing::HostedBy(*experts_[s]), testing::PlacedOn(*router_, s))
        << "server " << s;
  }

  // The measured imbalance is the predicted one.
  const v1::RouterStats after_switch = Stats();
  for (int round = 0; round < 4; ++round) {
    for (int l : layers) ASSERT_EQ(RunAndCompare(l), "");
  }
  const double measured_after = MeasuredImbalance(after_switch);
  // Every layer is balanced the same way, so the servers' totals over the
  // layers show the planned ratio.
  EXPECT_NEAR(measured_after, response.imbalance_after(), 0.05);
  EXPECT_LT(measured_after, measured_before);
  std::printf("[rebalance] imbalance %.3f -> %.3f (predicted %.3f -> %.3f), "
              "%d loaded, %d unloaded in %.3f s, %d calls during it\n",
              measured_before, measured_after, response.imbalance_before(),
              response.imbalance_after(), response.loaded(),
              response.unloaded(), response.seconds(), calls.load());

  // Nothing new to gain: nothing moves.
  v1::RebalanceResponse again;
  ASSERT_TRUE(Rebalance(/*force=*/false, &again).ok());
  EXPECT_FALSE(again.applied());
  EXPECT_FALSE(again.reason().empty());
}

// After a rebalance moved experts, a server restarted empty
// (--experts=none) and one restarted with its first --experts list both get
// what the router's placement now gives them before they take work; then
// every layer's output is bit-identical and each restarted server computes
// its share.
TEST_F(RebalanceTest, RestartedServersJoinWithTheExpertsTheRouterAssigns) {
  const std::vector<int> layers = MoeLayers();
  for (int round = 0; round < 4; ++round) {
    for (int l : layers) ASSERT_EQ(RunAndCompare(l), "");
  }
  v1::RebalanceResponse response;
  ASSERT_TRUE(Rebalance(/*force=*/false, &response).ok());
  ASSERT_TRUE(response.applied()) << response.reason();

  // Two servers whose placement changed: one comes back empty, the other
  // with the list it was first started with.
  std::vector<int> moved;
  for (int s = 0; s < kServers; ++s) {
    if (testing::PlacedOn(*router_, s) != first_lists_[s]) moved.push_back(s);
  }
  ASSERT_GE(moved.size(), 2u) << "the rebalance moved too little to test";
  const int empty_victim = moved[0], listed_victim = moved[1];
  for (int victim : {empty_victim, listed_victim}) {
    const int port = experts_[victim]->port();
    experts_[victim].reset();
    ExpertServerOptions options;
    options.listen_address = "127.0.0.1:" + std::to_string(port);
    options.engine.model_dir = testing::FixtureDir("tiny-mixtral");
    options.engine.num_threads = 1;
    if (victim == empty_victim) {
      options.engine.start_empty = true;
    } else {
      options.engine.experts = first_lists_[victim];
    }
    absl::StatusOr<std::unique_ptr<ExpertServer>> restarted =
        ExpertServer::Start(options);
    ASSERT_TRUE(restarted.ok()) << restarted.status();
    experts_[victim] = *std::move(restarted);
  }
  // The router's probe finds them, fixes what they host, and marks them up.
  auto joined = [&] {
    const v1::RouterStats stats = Stats();
    for (int victim : {empty_victim, listed_victim}) {
      if (!stats.servers(victim).up()) return false;
      if (testing::HostedBy(*experts_[victim]) != testing::PlacedOn(*router_, victim)) {
        return false;
      }
    }
    return true;
  };
  ASSERT_TRUE(testing::Eventually(joined))
      << "the restarted servers never got their experts back";

  const v1::RouterStats before = Stats();
  for (int round = 0; round < 2; ++round) {
    for (int l : layers) ASSERT_EQ(RunAndCompare(l), "");
  }
  const v1::RouterStats after = Stats();
  for (int victim : {empty_victim, listed_victim}) {
    if (testing::PlacedOn(*router_, victim).empty()) continue;
    EXPECT_GT(after.servers(victim).slots(), before.servers(victim).slots())
        << "restarted server " << victim << " takes no work";
  }
}

TEST_F(RebalanceTest, NoLoadMovesNothing) {
  v1::RebalanceResponse response;
  ASSERT_TRUE(Rebalance(/*force=*/true, &response).ok());
  EXPECT_FALSE(response.applied());
  EXPECT_THAT(response.reason(), HasSubstr("no tokens"));
}

// The servers' experts: all of `a` and `b` (true) or exactly `a`.
bool HostsAll(const std::vector<std::unique_ptr<ExpertServer>>& servers,
              const std::vector<std::set<std::pair<int, int>>>& a,
              const std::vector<std::set<std::pair<int, int>>>& b) {
  for (size_t s = 0; s < servers.size(); ++s) {
    std::set<std::pair<int, int>> want = a[s];
    want.insert(b[s].begin(), b[s].end());
    if (testing::HostedBy(*servers[s]) != want) return false;
  }
  return true;
}

// A follower (what an attention server with --moe_dispatch=direct does)
// copies the placement; a rebalance publishes the new one to it and keeps
// the old experts loaded until the follower acknowledges it, then unloads.
TEST_F(RebalanceTest, FollowersGetTheNewPlacementBeforeOldExpertsAreUnloaded) {
  const v1::DispatchConfig copied = CopyPlacement("follower-a");
  const uint64_t first_version = copied.placement_version();
  // Nothing changed: a poll with the current version is held, then answered
  // with it.
  EXPECT_EQ(Watch("follower-a", first_version, 0).version(), first_version);
  for (int round = 0; round < 4; ++round) {
    for (int l : MoeLayers()) ASSERT_EQ(RunAndCompare(l), "");
  }
  std::atomic<bool> returned{false};
  v1::RebalanceResponse response;
  grpc::Status status;
  std::thread rebalance([&] {
    status = Rebalance(/*force=*/false, &response);
    returned.store(true);
  });
  // Whatever fails below, acknowledge everything and wait for it.
  absl::Cleanup join = [&] {
    Watch("follower-a", ~uint64_t{0}, 0);
    rebalance.join();
  };
  // The rebalance first asks for load reports (answering the held poll,
  // which the follower makes again at once), then publishes the new
  // placement.
  v1::PlacementUpdate update;
  do {
    update = Watch("follower-a", first_version, 600);
  } while (update.version() == first_version);
  ASSERT_GT(update.version(), first_version);
  absl::StatusOr<PlacementTable> next =
      ReadPlacement(update.placement(), kServers, "placement");
  ASSERT_TRUE(next.ok()) << next.status();
  std::vector<std::set<std::pair<int, int>>> old_lists, new_lists;
  for (int s = 0; s < kServers; ++s) {
    old_lists.push_back(first_lists_[s]);
    new_lists.push_back(testing::PlacedOn(*router_, s));
    std::set<std::pair<int, int>> published;
    for (const LayerExpert& id : next->ExpertsOn(s)) {
      published.emplace(id.layer, id.expert);
    }
    EXPECT_EQ(published, new_lists[s]) << "server " << s;
  }
  // Not acknowledged yet: the old experts are still loaded, and the
  // rebalance is still waiting.
  EXPECT_TRUE(HostsAll(experts_, old_lists, new_lists));
  EXPECT_FALSE(returned.load());
  // Every layer still computes identically meanwhile.
  for (int l : MoeLayers()) ASSERT_EQ(RunAndCompare(l), "");
  // The acknowledgement (the next poll) lets the rebalance unload.
  EXPECT_EQ(Watch("follower-a", update.version(), 0).version(),
            update.version());
  std::move(join).Invoke();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(response.applied()) << response.reason();
  EXPECT_TRUE(response.reason().empty()) << response.reason();
  EXPECT_TRUE(HostsAll(experts_, new_lists, new_lists));
}

class RebalanceFollowerTimeoutTest : public RebalanceTest {
 protected:
  RebalanceFollowerTimeoutTest() { follower_timeout_seconds_ = 0.5; }
};

// A follower that never acknowledges: the rebalance still switches, but
// leaves the old experts loaded, saying which follower it waited for.
TEST_F(RebalanceFollowerTimeoutTest, ASilentFollowerKeepsTheOldExpertsLoaded) {
  CopyPlacement("follower-silent");
  for (int l : MoeLayers()) ASSERT_EQ(RunAndCompare(l), "");
  v1::RebalanceResponse response;
  ASSERT_TRUE(Rebalance(/*force=*/true, &response).ok());
  ASSERT_TRUE(response.applied()) << response.reason();
  EXPECT_THAT(response.reason(), HasSubstr("follower-silent did not confirm"));
  std::vector<std::set<std::pair<int, int>>> new_lists;
  for (int s = 0; s < kServers; ++s) new_lists.push_back(testing::PlacedOn(*router_, s));
  EXPECT_TRUE(HostsAll(experts_, first_lists_, new_lists));
  for (int l : MoeLayers()) ASSERT_EQ(RunAndCompare(l), "");
}

class RebalanceWindowTest : public RebalanceTest {
 protected:
  RebalanceWindowTest() { window_seconds_ = 60; }
};

// With a 60 s window, load older than 60 s no longer counts: the skewed
// rounds at t < 100 s are out of the window at t = 170 s (nothing to
// balance), and a rebalance at t = 180 s sees only the rounds since.
TEST_F(RebalanceWindowTest, LoadOlderThanTheWindowNoLongerCounts) {
  const ModelConfig& c = weights_.config;
  const int64_t tokens_per_round = int64_t{kTokens} * c.num_experts_per_tok *
                                   static_cast<int64_t>(MoeLayers().size());
  for (int round = 0; round < 4; ++round) {
    for (int l : MoeLayers()) ASSERT_EQ(RunAndCompare(l), "");
  }
  fake_seconds_ = 100;
  router_->rebalancer().SampleLoad();
  fake_seconds_ = 170;
  v1::RebalanceResponse stale;
  ASSERT_TRUE(Rebalance(/*force=*/true, &stale).ok());
  EXPECT_FALSE(stale.applied());
  EXPECT_THAT(stale.reason(), HasSubstr("no tokens were routed in the last 60 s"));

  for (int round = 0; round < 3; ++round) {
    for (int l : MoeLayers()) ASSERT_EQ(RunAndCompare(l), "");
  }
  fake_seconds_ = 180;
  v1::RebalanceResponse fresh;
  ASSERT_TRUE(Rebalance(/*force=*/true, &fresh).ok());
  ASSERT_TRUE(fresh.applied()) << fresh.reason();
  EXPECT_EQ(fresh.window_tokens(), 3 * tokens_per_round);
  // From the sample at 100 s, the newest at or before 180 - 60.
  EXPECT_DOUBLE_EQ(fresh.window_seconds(), 80);
  for (int l : MoeLayers()) ASSERT_EQ(RunAndCompare(l), "");
}

// `moe-cli rebalance`, the operator's way in: the outcome as text or JSON,
// the router's refusal as an error, a missing --router named.
TEST_F(RebalanceTest, MoeCliRebalancePrintsTheOutcome) {
  const std::string router = "127.0.0.1:" + std::to_string(router_->port());
  testing::ProcessResult json =
      testing::RunProcess({MOE_CLI_BIN, "rebalance", "--router", router, "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const nlohmann::json out = nlohmann::json::parse(json.out, nullptr, false);
  ASSERT_FALSE(out.is_discarded()) << json.out;
  EXPECT_EQ(out["applied"], false);
  EXPECT_THAT(out["reason"].get<std::string>(), HasSubstr("no tokens"));

  for (int l : MoeLayers()) ASSERT_EQ(RunAndCompare(l), "");
  testing::ProcessResult text =
      testing::RunProcess({MOE_CLI_BIN, "rebalance", "--router", router});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("rebalanced: imbalance"));

  // A router that is gone: the error, exit 1.
  const std::string gone = "127.0.0.1:" + std::to_string(router_->port());
  router_.reset();
  testing::ProcessResult failed = testing::RunProcess(
      {MOE_CLI_BIN, "rebalance", "--router", gone, "--force", "--timeout",
       "30"});
  EXPECT_EQ(failed.exit_code, 1) << failed.out;
  EXPECT_THAT(failed.err, HasSubstr(gone));

  testing::ProcessResult missing = testing::RunProcess({MOE_CLI_BIN, "rebalance"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("--router is required"));
}

}  // namespace
}  // namespace moe
