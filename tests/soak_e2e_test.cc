// Soak end-to-end (issue: reliability), real processes on 127.0.0.1 started
// by the real launcher: a 2p1d cluster takes kRounds rounds of kStreams
// concurrent streams with random prompts and lengths, of four kinds:
//   * complete: read to the end; OK with exactly max_tokens tokens;
//   * cancel: ClientContext::TryCancel at a random point (before the
//     reservation up to after the last token); CANCELLED, or OK and whole;
//   * drop: a client on its own connection reads a few tokens, then drops
//     the call and its channel without finishing it;
//   * kill: a moe-cli child process SIGKILLed once it printed tokens (its
//     connection closes with no cancellation sent).
// After every round every attention server's KV blocks are back to their
// baseline with nothing running or waiting, and the gateway's in-flight
// gauges are back at zero; every server's resident memory after the last
// round is within kRssBoundKiB of its value after the first.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/process_util.h"
#include "tests/reliability_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::ChildProcess;
using ::moe::testing::LaunchedCluster;
using Clock = std::chrono::steady_clock;

constexpr int kRounds = 5;
constexpr int kStreams = 100;
// Per attention server (256 blocks of tiny-mixtral). The pool's pages are
// touched as blocks are first used, and the prefix cache cycles through all
// of them: with 16 MiB pools the prefill servers' RSS grew by the pool's
// size over 18 rounds before levelling off. Small, the pool is resident from
// the first round on; it also makes the decode server queue requests.
constexpr int kKvCacheMb = 2;
// Resident memory a server may gain from the end of round 1 to the end of
// round 5. Measured on the reference machine (2 cores), 30 rounds: growth
// levels off by round 10, at most +3.6 MiB (the gateway) from round 1 to 30
// and +2.3 MiB from round 1 to 5. A leak of 40 KiB per stream (400 streams
// over rounds 2..5) would exceed the bound.
constexpr int64_t kRssBoundKiB = 16 * 1024;
// Each client's deadline, against hangs only: a round's 100 streams queue
// on one decode server for as long as this machine takes to serve them.
constexpr int kCallSeconds = 300;

enum class Kind { kComplete, kCancel, kDrop, kKill };

struct Stream {
  Kind kind = Kind::kComplete;
  std::vector<int32_t> prompt;
  int max_tokens = 0;
  int cancel_after_us = 0;    // kCancel
  int drop_after_tokens = 0;  // kDrop
};

// Round outcome counts.
struct Counts {
  std::atomic<int> completed{0};
  std::atomic<int> cancelled{0};        // kCancel that ended CANCELLED
  std::atomic<int> cancel_too_late{0};  // kCancel that finished first
  std::atomic<int> dropped{0};
  std::atomic<int> killed{0};
  std::atomic<int> kill_too_late{0};  // kKill that finished first
};

std::string Ids(const std::vector<int32_t>& ids) {
  return absl::StrJoin(ids, ",");
}

// A client on its own TCP connection (no subchannel shared with the other
// clients of this process), so that dropping it closes that connection.
std::shared_ptr<grpc::Channel> OwnChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

void RunComplete(v1::Inference::Stub& gateway, const Stream& s,
                 Counts& counts) {
  const testing::StreamResult r = testing::RunGenerate(
      gateway, testing::GreedyRequest(s.prompt, s.max_tokens), kCallSeconds);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(static_cast<int>(r.tokens.size()), s.max_tokens);
  EXPECT_EQ(r.usage.completion_tokens(), s.max_tokens);
  EXPECT_EQ(r.finish_messages, 1);
  ++counts.completed;
}

void RunCancel(v1::Inference::Stub& gateway, const Stream& s, Counts& counts) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(kCallSeconds));
  auto reader = gateway.Generate(
      &context, testing::GreedyRequest(s.prompt, s.max_tokens));
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::microseconds(s.cancel_after_us));
    context.TryCancel();
  });
  v1::GenerateResponse response;
  int tokens = 0;
  while (reader->Read(&response)) tokens += response.token_ids_size();
  const grpc::Status status = reader->Finish();
  canceller.join();
  if (status.ok()) {
    EXPECT_EQ(tokens, s.max_tokens);
    ++counts.cancel_too_late;
  } else {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED)
        << status.error_message();
    ++counts.cancelled;
  }
}

void RunDrop(const std::string& address, const Stream& s, Counts& counts) {
  std::shared_ptr<grpc::Channel> channel = OwnChannel(address);
  std::unique_ptr<v1::Inference::Stub> stub = v1::Inference::NewStub(channel);
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(kCallSeconds));
  auto reader = stub->Generate(context.get(),
                               testing::GreedyRequest(s.prompt, s.max_tokens));
  v1::GenerateResponse response;
  int tokens = 0;
  bool open = true;
  while (tokens < s.drop_after_tokens && (open = reader->Read(&response))) {
    tokens += response.token_ids_size();
  }
  if (!open) {
    // The stream ended before the client left it: say how it ended.
    const grpc::Status status = reader->Finish();
    ADD_FAILURE() << "the stream ended after " << tokens << " of "
                  << s.max_tokens << " tokens, before the client dropped it "
                  << "at " << s.drop_after_tokens << ": status "
                  << status.error_code() << " " << status.error_message();
  }
  // Gone without Finish: the call, the stub, the channel and its connection.
  reader.reset();
  context.reset();
  stub.reset();
  channel.reset();
  ++counts.dropped;
}

void RunKill(const std::string& address, const Stream& s, Counts& counts) {
  std::unique_ptr<ChildProcess> cli = ChildProcess::Start(
      {MOE_CLI_BIN, "generate", "--gateway", address, "--prompt-ids",
       Ids(s.prompt), "--max-tokens", std::to_string(s.max_tokens),
       "--ignore-eos", "--timeout", std::to_string(kCallSeconds)});
  ASSERT_NE(cli, nullptr);
  // Mid-stream: it printed tokens.
  EXPECT_TRUE(cli->ReadUntilContains("output: ", kCallSeconds))
      << cli->StderrText();
  cli->Signal(SIGKILL);
  const std::optional<int> status = cli->Wait(60);
  ASSERT_TRUE(status.has_value());
  if (WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) {
    ++counts.killed;
  } else {  // it streamed to the end first (a slow test host)
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << "moe-cli status " << *status << ": " << cli->StderrText();
    ++counts.kill_too_late;
  }
}

TEST(SoakTest, CancellationsAndDisconnectsLeaveKvAndMemoryAtBaseline) {
  testing::TempDir dir;
  const std::string topology = dir.Join("soak.json");
  // Two prefill servers and one decode server, each with a kKvCacheMb pool.
  // The decode server's K/V lease is an hour: a reserved request waits for
  // the prefill servers as long as this machine takes, and only the
  // cancellations and disconnects under test may free blocks, never a
  // lease running out.
  std::vector<std::string> servers;
  for (const char* server : {"prefill-0", "prefill-1", "decode-0"}) {
    const std::string name = server;
    const std::string role = name.substr(0, name.find('-'));
    servers.push_back(absl::StrCat(
        R"({"name": ")", name, R"(", "role": ")", role,
        R"(", "kv_cache_mb": )", kKvCacheMb,
        role == "decode" ? R"(, "kv_lease_seconds": 3600)" : "", "}"));
  }
  testing::WriteFileOrDie(
      topology, absl::StrCat(R"({"expert_servers": 2, "attention_servers": [)",
                             absl::StrJoin(servers, ", "), "]}"));
  testing::ResidentMemoryMeaningfulUnderAsan();
  std::unique_ptr<LaunchedCluster> cluster =
      LaunchedCluster::Start(topology, testing::FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const std::string gateway = cluster->address("gateway");
  std::map<std::string, v1::AttentionLoad> baseline;
  for (const std::string& name : cluster->attention_names()) {
    baseline[name] = cluster->AttentionLoad(name);
  }

  std::mt19937 rng(2027);
  std::uniform_int_distribution<int32_t> id(3, 500);
  std::vector<int32_t> system_prompt(32);  // shared by half the prompts
  for (int32_t& t : system_prompt) t = id(rng);
  std::vector<std::map<std::string, int64_t>> rss(kRounds);
  int total_completed = 0, total_cancelled = 0, total_dropped = 0,
      total_killed = 0;
  for (int round = 0; round < kRounds; ++round) {
    const Clock::time_point round_start = Clock::now();
    std::vector<Stream> streams(kStreams);
    for (Stream& s : streams) {
      const int kind = std::uniform_int_distribution<int>(0, 99)(rng);
      s.kind = kind < 45   ? Kind::kComplete
               : kind < 75 ? Kind::kCancel
               : kind < 90 ? Kind::kDrop
                           : Kind::kKill;
      if (std::uniform_int_distribution<int>(0, 1)(rng) == 1)
        s.prompt = system_prompt;
      const int tail = std::uniform_int_distribution<int>(3, 90)(rng);
      for (int i = 0; i < tail; ++i) s.prompt.push_back(id(rng));
      // Disconnects need a stream long enough to leave mid-way.
      s.max_tokens = std::uniform_int_distribution<int>(
          s.kind == Kind::kDrop || s.kind == Kind::kKill ? 24 : 2, 64)(rng);
      s.cancel_after_us = std::uniform_int_distribution<int>(0, 600000)(rng);
      s.drop_after_tokens =
          std::uniform_int_distribution<int>(1, s.max_tokens / 2)(rng);
    }
    Counts counts;
    std::vector<std::thread> clients;
    for (const Stream& s : streams) {
      clients.emplace_back([&, &s = s] {
        switch (s.kind) {
          case Kind::kComplete:
            RunComplete(cluster->gateway(), s, counts);
            break;
          case Kind::kCancel:
            RunCancel(cluster->gateway(), s, counts);
            break;
          case Kind::kDrop:
            RunDrop(gateway, s, counts);
            break;
          case Kind::kKill:
            RunKill(gateway, s, counts);
            break;
        }
      });
    }
    for (std::thread& t : clients) t.join();
    const double streams_seconds =
        std::chrono::duration<double>(Clock::now() - round_start).count();

    // Back to baseline: every block free, nothing running or waiting, on
    // every attention server; the gateway tracks no stream.
    ASSERT_TRUE(cluster->WaitForIdleKv())
        << "round " << round + 1 << ": blocks leaked";
    for (const std::string& name : cluster->attention_names()) {
      const v1::AttentionLoad load = cluster->AttentionLoad(name);
      EXPECT_EQ(load.kv_blocks_free(), baseline[name].kv_blocks_free()) << name;
      EXPECT_EQ(load.kv_blocks_reserved(), 0) << name;
    }
    EXPECT_TRUE(testing::WaitForGatewayIdle(cluster->metrics_url("gateway")))
        << "round " << round + 1 << ": the gateway still tracks "
        << testing::GatewayInFlight(cluster->metrics_url("gateway"))
        << " streams";
    rss[round] = testing::ResidentKiBByServer(*cluster);

    std::string rss_line;
    for (const auto& [name, kib] : rss[round]) {
      absl::StrAppend(&rss_line, " ", name, "=", kib, "KiB");
    }
    std::printf(
        "soak round %d: %d streams in %.1f s: %d completed, %d cancelled (+%d "
        "finished before "
        "the cancel), %d dropped, %d killed (+%d finished before the kill); KV "
        "idle on %zu attention servers; RSS:%s\n",
        round + 1, kStreams, streams_seconds, counts.completed.load(),
        counts.cancelled.load(), counts.cancel_too_late.load(),
        counts.dropped.load(), counts.killed.load(),
        counts.kill_too_late.load(), cluster->attention_names().size(),
        rss_line.c_str());
    std::fflush(stdout);
    total_completed +=
        counts.completed + counts.cancel_too_late + counts.kill_too_late;
    total_cancelled += counts.cancelled;
    total_dropped += counts.dropped;
    total_killed += counts.killed;
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(total_cancelled, 0);
  EXPECT_GT(total_dropped, 0);
  EXPECT_GT(total_killed, 0);

  // Memory: no growth beyond the bound from the first round to the last.
  std::string growth;
  for (const auto& [name, first] : rss[0]) {
    const int64_t last = rss[kRounds - 1].at(name);
    ASSERT_GT(first, 0) << name;
    ASSERT_GT(last, 0) << name;
    EXPECT_LE(last - first, kRssBoundKiB)
        << name << ": " << first << " KiB after round 1, " << last
        << " KiB after round " << kRounds;
    absl::StrAppend(&growth, " ", name, "=", last - first >= 0 ? "+" : "",
                    last - first, "KiB");
  }
  std::printf(
      "soak: %d completed, %d cancelled, %d dropped, %d killed; RSS round 1 -> "
      "%d:%s "
      "(bound +%lld KiB)\n",
      total_completed, total_cancelled, total_dropped, total_killed, kRounds,
      growth.c_str(), static_cast<long long>(kRssBoundKiB));

  // The cluster still serves.
  const testing::StreamResult ok = testing::RunGenerate(
      cluster->gateway(), testing::GreedyRequest({7, 8, 9, 10}, 10));
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.tokens.size(), 10u);
}

}  // namespace
}  // namespace moe
