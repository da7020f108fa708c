// Faults with real processes on 127.0.0.1 (clusters started by the real
// moe-cluster): an expert server killed with and without replicas, an
// expert server hung (SIGSTOP) under the router's fan-out deadline, and a
// decode server killed mid-stream, which the gateway migrates. Each test
// prints what it measured ("[fault] ...") for the closing note.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/engine.h"
#include "core/rpc/tensor_codec.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/background_stream.h"
#include "tests/cluster_checks.h"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/process_util.h"
#include "tests/reliability_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureDir;
using ::moe::testing::LaunchedCluster;
using ::moe::testing::StreamResult;
using ::testing::HasSubstr;

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

using ::moe::testing::BackgroundStream;
using ::moe::testing::Eventually;

// 1 while the router sends expert server `address` work, 0 while it is
// marked down (moe_router_expert_server_up); nullopt when the router's
// /metrics cannot be read or lacks the series.
std::optional<double> ExpertServerUp(LaunchedCluster& cluster,
                                     const std::string& address) {
  const std::optional<std::string> text =
      testing::HttpGet(cluster.metrics_url("router"));
  const std::string labels = absl::StrCat("server=\"", address, "\"");
  if (!text.has_value() || !absl::StrContains(*text, labels)) return std::nullopt;
  return testing::SeriesValue(*text, "moe_router_expert_server_up", labels);
}

std::string WriteTopology(const testing::TempDir& dir, const std::string& json) {
  const std::string path = dir.Join("topology.json");
  testing::WriteFileOrDie(path, json);
  return path;
}

// A prompt of `n` tokens, different for each `seed`.
std::vector<int32_t> Prompt(int n, int seed) {
  std::vector<int32_t> prompt(n);
  for (int i = 0; i < n; ++i) prompt[i] = 3 + (seed * 131 + i * 37) % 500;
  return prompt;
}

class FaultTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    engine_ = testing::LoadReferenceEngine(FixtureDir("tiny-mixtral")).release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }
  static std::vector<int32_t> Reference(const std::vector<int32_t>& prompt,
                                        int max_tokens) {
    return testing::EngineTokens(*engine_, prompt, max_tokens);
  }
  static Engine* engine_;
};

Engine* FaultTest::engine_ = nullptr;

// The fan-out deadline of the tests whose expert servers die rather than
// hang: far longer than any healthy call takes on a busy machine, so that
// only the failure being tested can fail a call; a failure reported in
// less time was reported without waiting for the deadline.
constexpr double kFanoutTimeout = 60;

// Scenario 1, replicated: every expert on both servers. Killing one while
// streams run: the router marks it down (well before the fan-out deadline),
// its groups go to the replica, and every stream finishes with the
// undisturbed tokens. Restarted, the server is marked up again and takes
// slots.
TEST_F(FaultTest, KilledExpertServerWithReplicasIsRoutedAroundAndRejoins) {
  testing::TempDir dir;
  const std::string topology = WriteTopology(
      dir, absl::StrCat(R"({
    "expert_servers": 2, "replicas": 2,
    "router": {"fanout_timeout": )", kFanoutTimeout, R"(},
    "attention_servers": 1, "gateway": {}})"));
  std::unique_ptr<LaunchedCluster> cluster =
      LaunchedCluster::Start(topology, FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const std::string victim = cluster->address("expert-1");
  const int kTokens = 400;
  std::vector<std::unique_ptr<BackgroundStream>> streams;
  for (int i = 0; i < 3; ++i) {
    streams.push_back(std::make_unique<BackgroundStream>(
        cluster->gateway(), testing::GreedyRequest(Prompt(8 + i, i), kTokens)));
  }
  ASSERT_TRUE(Eventually([&] {
    for (auto& s : streams) {
      if (s->tokens_so_far() < 20) return false;
    }
    return true;
  }));
  const pid_t pid = cluster->pid("expert-1");
  const std::vector<std::string> argv = testing::CommandLineArgs(pid);
  const Clock::time_point killed = Clock::now();
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  ASSERT_TRUE(Eventually([&] {
    return ExpertServerUp(*cluster, victim) == 0.0;
  })) << "the router never marked " << victim << " down";
  const double marked_down = SecondsSince(killed);
  int finished_after_kill = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    const StreamResult& r = streams[i]->Finish();
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens, Reference(Prompt(8 + i, i), kTokens)) << "stream " << i;
    EXPECT_EQ(r.finish_messages, 1);
    ++finished_after_kill;
  }
  // Noticed by the calls that failed or by the health probes, not by the
  // fan-out deadline.
  EXPECT_LT(marked_down, kFanoutTimeout);

  // Restarted on its address, it rejoins and serves again.
  std::unique_ptr<testing::ChildProcess> restarted = testing::RestartServer(argv, victim, dir.path());
  ASSERT_NE(restarted, nullptr);
  const Clock::time_point restart = Clock::now();
  ASSERT_TRUE(Eventually([&] {
    return ExpertServerUp(*cluster, victim) == 1.0;
  })) << "the restarted " << victim << " never rejoined";
  const double rejoined = SecondsSince(restart);
  v1::RouterStats before;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(cluster->router().GetStats(&context, v1::GetRouterStatsRequest(), &before).ok());
  }
  const StreamResult after = testing::RunGenerate(
      cluster->gateway(), testing::GreedyRequest(Prompt(12, 9), 48));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.tokens, Reference(Prompt(12, 9), 48));
  v1::RouterStats stats;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(cluster->router().GetStats(&context, v1::GetRouterStatsRequest(), &stats).ok());
  }
  EXPECT_GT(stats.servers(1).slots(), before.servers(1).slots())
      << "the restarted expert server takes no slots";
  std::printf("[fault] expert SIGKILL, 2 replicas: marked down after %.3f s; "
              "%d/3 streams of %d tokens finished OK and equal to the "
              "engine; restarted server marked up after %.3f s and took %lld "
              "more slots\n",
              marked_down, finished_after_kill, kTokens, rejoined,
              static_cast<long long>(stats.servers(1).slots() -
                                     before.servers(1).slots()));
  restarted->Signal(SIGTERM);
  restarted->Wait(30);
}

// Placement of the tests without replicas: expert-1 hosts only expert 7
// of layer 1; expert-0 hosts everything else.
constexpr char kLonelyExpertTopology[] = R"({
  "expert_servers": [
    {"name": "expert-0", "experts": "0:0-7,1:0-6"},
    {"name": "expert-1", "experts": "1:7"}],
  "router": {"fanout_timeout": %s},
  "attention_servers": 1, "gateway": {}})";

std::string LonelyExpertTopology(const testing::TempDir& dir,
                                 const std::string& fanout_timeout) {
  std::string json = kLonelyExpertTopology;
  json.replace(json.find("%s"), 2, fanout_timeout);
  return WriteTopology(dir, json);
}

// Scenario 1, no replica: with expert-1 (layer 1's expert 7) killed, the
// requests that need that expert fail at once with UNAVAILABLE naming it;
// the others finish with the undisturbed tokens. Restarted, the server
// rejoins and the failed requests succeed.
TEST_F(FaultTest, KilledExpertServerWithoutReplicaFailsOnlyTheRequestsThatNeedIt) {
  testing::TempDir dir;
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      LonelyExpertTopology(dir, absl::StrCat(kFanoutTimeout)),
      FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const std::string victim = cluster->address("expert-1");
  const pid_t pid = cluster->pid("expert-1");
  const std::vector<std::string> argv = testing::CommandLineArgs(pid);
  ASSERT_EQ(kill(pid, SIGKILL), 0);

  // Sixteen short requests at once; which of them route a token to expert
  // 7 of layer 1 is fixed by their prompts (greedy decoding).
  const int kRequests = 16, kTokens = 2;
  std::vector<StreamResult> results(kRequests);
  std::vector<double> seconds(kRequests);
  {
    std::vector<std::thread> clients;
    for (int i = 0; i < kRequests; ++i) {
      clients.emplace_back([&, i] {
        const Clock::time_point start = Clock::now();
        results[i] = testing::RunGenerate(
            cluster->gateway(), testing::GreedyRequest({3 + 29 * i}, kTokens));
        seconds[i] = SecondsSince(start);
      });
    }
    for (std::thread& t : clients) t.join();
  }
  int ok = 0, failed = 0;
  double slowest_failure = 0;
  std::vector<int> failed_ids;
  for (int i = 0; i < kRequests; ++i) {
    const StreamResult& r = results[i];
    if (r.status.ok()) {
      ++ok;
      EXPECT_EQ(r.tokens, Reference({3 + 29 * i}, kTokens)) << "request " << i;
      continue;
    }
    ++failed;
    failed_ids.push_back(i);
    slowest_failure = std::max(slowest_failure, seconds[i]);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << i;
    EXPECT_THAT(r.status.error_message(), HasSubstr("expert 7 of layer 1"));
    EXPECT_THAT(r.status.error_message(), HasSubstr(victim));
  }
  EXPECT_GT(failed, 0) << "no request needed expert 7 of layer 1";
  EXPECT_GT(ok, 0) << "every request needed expert 7 of layer 1";
  // Failing fast: without waiting for the fan-out deadline.
  EXPECT_LT(slowest_failure, kFanoutTimeout);

  std::unique_ptr<testing::ChildProcess> restarted = testing::RestartServer(argv, victim, dir.path());
  ASSERT_NE(restarted, nullptr);
  ASSERT_TRUE(Eventually([&] {
    return ExpertServerUp(*cluster, victim) == 1.0;
  }));
  for (int i : failed_ids) {
    const StreamResult r = testing::RunGenerate(
        cluster->gateway(), testing::GreedyRequest({3 + 29 * i}, kTokens));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens, Reference({3 + 29 * i}, kTokens));
  }
  std::printf("[fault] expert SIGKILL, no replica: %d/%d requests needed "
              "expert 7 of layer 1 and failed UNAVAILABLE naming it (slowest "
              "after %.3f s), %d finished OK and equal to the engine; after "
              "a restart all %d succeed\n",
              failed, kRequests, slowest_failure, ok, failed);
  restarted->Signal(SIGTERM);
  restarted->Wait(30);
}

// Scenario 2: expert-1 hung. A layer-1 batch that needs it fails its
// tokens after the fan-out deadline; a layer-0 batch sent meanwhile (which
// needs only expert-0) is not held up; once marked down, layer-1 batches
// fail those tokens at once; after SIGCONT the server serves again.
TEST_F(FaultTest, HungExpertServerFailsWithinTheFanOutDeadlineAndBlocksNothingElse) {
  testing::TempDir dir;
  // The deadline applies to every call of the router, the healthy
  // expert-0's included: long enough that none of those (a few
  // milliseconds each) can miss it on a busy machine, and that the layer-0
  // batch sent meanwhile has all of it to finish in. The hung batch takes
  // this long.
  const double kDeadline = 30;
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      LonelyExpertTopology(dir, absl::StrCat(kDeadline)),
      FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const pid_t pid = cluster->pid("expert-1");
  const int64_t hidden = engine_->config().hidden_size;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  auto batch = [&](int layer, int64_t tokens) {
    std::vector<float> x(tokens * hidden);
    for (float& v : x) v = normal(rng);
    v1::RunMoeRequest request;
    request.set_layer(layer);
    EncodeF32(x.data(), tokens, hidden, request.mutable_hidden());
    return request;
  };
  struct Call {
    grpc::Status status;
    v1::RunMoeResponse response;
    double seconds = 0;
    Clock::time_point end;
  };
  auto run = [&](const v1::RunMoeRequest& request) {
    Call call;
    grpc::ClientContext context;
    const Clock::time_point start = Clock::now();
    call.status = cluster->router().RunMoe(&context, request, &call.response);
    call.end = Clock::now();
    call.seconds = SecondsSince(start);
    return call;
  };
  // Slots the router has sent expert-1 so far (its GetStats).
  auto expert1_slots = [&]() -> int64_t {
    grpc::ClientContext context;
    v1::RouterStats stats;
    const grpc::Status status = cluster->router().GetStats(
        &context, v1::GetRouterStatsRequest(), &stats);
    if (!status.ok() || stats.servers_size() < 2) return -1;
    return stats.servers(1).slots();
  };
  // 64 random tokens: some route to expert 7 of layer 1.
  const v1::RunMoeRequest layer1 = batch(1, 64);
  const v1::RunMoeRequest layer0 = batch(0, 64);
  ASSERT_TRUE(run(layer1).status.ok());
  const int64_t slots_before = expert1_slots();
  ASSERT_GE(slots_before, 0);

  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  Call hung;
  std::atomic<bool> hung_returned{false};
  std::thread slow([&] {
    hung = run(layer1);
    hung_returned = true;
  });
  // The layer-0 batch goes once the router has planned the hung batch (it
  // counts expert-1's slots when it sends them), so that it is sent while
  // that batch waits on expert-1.
  while (!hung_returned && expert1_slots() <= slots_before) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const Call other = run(layer0);
  slow.join();
  ASSERT_TRUE(other.status.ok()) << other.status.error_message();
  EXPECT_EQ(other.response.failed_tokens_size(), 0);
  EXPECT_LT(other.end, hung.end) << "the layer-0 batch waited for the hung server";
  ASSERT_TRUE(hung.status.ok()) << hung.status.error_message();
  EXPECT_GT(hung.response.failed_tokens_size(), 0);
  EXPECT_LT(hung.response.failed_tokens_size(), 64);
  EXPECT_THAT(hung.response.failure_message(), HasSubstr("expert 7 of layer 1"));
  EXPECT_THAT(hung.response.failure_message(), HasSubstr("deadline"));
  EXPECT_GE(hung.seconds, kDeadline * 0.9);
  // At its deadline: not after a second one, nor whenever the server wakes.
  EXPECT_LT(hung.seconds, 2 * kDeadline);

  // Marked down now: no waiting for the deadline any more.
  const Call fast = run(layer1);
  ASSERT_TRUE(fast.status.ok()) << fast.status.error_message();
  EXPECT_EQ(fast.response.failed_tokens_size(),
            hung.response.failed_tokens_size());
  EXPECT_THAT(fast.response.failure_message(), HasSubstr("is down"));
  EXPECT_LT(fast.seconds, kDeadline);

  // Through the whole cluster, while hung: a stream either finishes with
  // the engine's tokens or fails naming the expert; none hangs.
  const StreamResult stream = testing::RunGenerate(
      cluster->gateway(), testing::GreedyRequest(Prompt(16, 3), 16), 60);
  if (!stream.status.ok()) {
    EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(stream.status.error_message(), HasSubstr("expert 7 of layer 1"));
  } else {
    EXPECT_EQ(stream.tokens, Reference(Prompt(16, 3), 16));
  }

  ASSERT_EQ(kill(pid, SIGCONT), 0);
  Call back;
  ASSERT_TRUE(Eventually([&] {
    back = run(layer1);
    return back.status.ok() && back.response.failed_tokens_size() == 0;
  })) << "the resumed expert server never served again";
  std::printf("[fault] expert SIGSTOP, fan-out deadline %.0f s: the batch "
              "needing it returned after %.3f s with %d/64 tokens failed "
              "(\"%s\"); a layer-0 batch sent meanwhile took %.3f s; once "
              "marked down a batch took %.3f s; after SIGCONT it serves "
              "again\n",
              kDeadline, hung.seconds, hung.response.failed_tokens_size(),
              hung.response.failure_message().c_str(), other.seconds,
              fast.seconds);
}

// Scenario 3: a decode server killed mid-stream. The gateway continues
// each of its requests on the other decode server: every stream ends once,
// with the tokens of an undisturbed run (greedy, and seeded sampling), and
// usage counting the original prompt.
TEST_F(FaultTest, KilledDecodeServerMigratesItsStreamsWithoutGapOrRepeat) {
  std::unique_ptr<LaunchedCluster> cluster =
      LaunchedCluster::Start("deploy/local/1p2d.json", FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const int kTokens = 400;
  // A sampled request, run once undisturbed for its expected tokens.
  v1::GenerateRequest sampled = testing::GreedyRequest(Prompt(10, 77), kTokens);
  sampled.mutable_sampling()->set_temperature(0.8f);
  sampled.mutable_sampling()->set_top_p(0.9f);
  sampled.mutable_sampling()->set_seed(4242);
  const StreamResult undisturbed = testing::RunGenerate(cluster->gateway(), sampled);
  ASSERT_TRUE(undisturbed.status.ok()) << undisturbed.status.error_message();

  std::vector<v1::GenerateRequest> requests;
  for (int i = 0; i < 5; ++i) {
    requests.push_back(testing::GreedyRequest(Prompt(6 + i, 40 + i), kTokens));
  }
  requests.push_back(sampled);
  std::vector<std::unique_ptr<BackgroundStream>> streams;
  for (const v1::GenerateRequest& r : requests) {
    streams.push_back(std::make_unique<BackgroundStream>(cluster->gateway(), r));
  }
  ASSERT_TRUE(Eventually([&] {
    for (auto& s : streams) {
      if (s->tokens_so_far() < 30) return false;
    }
    return true;
  }));
  const int on_victim = cluster->AttentionLoad("decode-0").running();
  ASSERT_EQ(kill(cluster->pid("decode-0"), SIGKILL), 0);
  double max_gap = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    const StreamResult& r = streams[i]->Finish();
    ASSERT_TRUE(r.status.ok()) << "stream " << i << ": " << r.status.error_message();
    EXPECT_EQ(r.finish_messages, 1);
    EXPECT_EQ(r.finish_reason, v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(r.usage.prompt_tokens(), requests[i].prompt_ids_size());
    EXPECT_EQ(r.usage.completion_tokens(), kTokens);
    if (i + 1 < streams.size()) {
      std::vector<int32_t> prompt(requests[i].prompt_ids().begin(),
                                  requests[i].prompt_ids().end());
      EXPECT_EQ(r.tokens, Reference(prompt, kTokens)) << "stream " << i;
    } else {
      EXPECT_EQ(r.tokens, undisturbed.tokens) << "the sampled stream";
    }
    max_gap = std::max(max_gap, streams[i]->max_gap_seconds());
  }
  const std::optional<std::string> gateway_metrics =
      testing::HttpGet(cluster->metrics_url("gateway"));
  ASSERT_TRUE(gateway_metrics.has_value());
  const double migrations =
      testing::SeriesValue(*gateway_metrics, "moe_gateway_migrations_total");
  EXPECT_GE(migrations, 1);
  EXPECT_EQ(migrations, on_victim);
  std::printf("[fault] decode SIGKILL mid-stream: %d of 6 streams were on it "
              "and migrated (moe_gateway_migrations_total %.0f); all 6 ended "
              "OK with %d tokens equal to an undisturbed run (5 greedy, 1 "
              "seeded top-p); longest pause between tokens %.3f s\n",
              on_victim, migrations, kTokens, max_gap);
}

}  // namespace
}  // namespace moe
