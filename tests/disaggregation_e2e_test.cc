// End-to-end prefill/decode disaggregation with real processes on
// 127.0.0.1, started by the real launcher:
//   * greedy streams that share prompt prefixes equal the single-process
//     engine on 1p1d, 1p2d, 2p1d and colocated, and the prefix cache is hit
//     and counted;
//   * a prefill server killed after the decode server reserved the K/V:
//     the request fails with a clear status and the decode server's blocks
//     return to their baseline;
//   * a reservation whose K/V never comes fails at the end of its lease;
//   * cancellation after the prefill but before the decode server took the
//     K/V frees the blocks on both sides;
//   * five rounds of 50 concurrent requests, each cancelled at a random
//     point, leak no block, and a request afterwards succeeds.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/engine.h"
#include "core/generator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster_checks.h"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::FixtureDir;
using ::moe::testing::LaunchedCluster;
using ::moe::testing::StreamResult;
using ::testing::HasSubstr;

using Clock = std::chrono::steady_clock;

using ::moe::testing::Eventually;

// A decode server's K/V lease where the test does not provoke its expiry:
// an hour, so that no request fails because a busy machine took long to
// prefill it, and blocks come back only by the cancellation under test,
// never by a lease running out.
constexpr char kHourLease[] = R"("kv_lease_seconds": 3600)";

// A topology written for one test: `attention` is the JSON list of
// attention servers.
std::string WriteTopology(const testing::TempDir& dir, const std::string& attention) {
  const std::string path = dir.Join("topology.json");
  testing::WriteFileOrDie(path, absl::StrCat(R"({"expert_servers": 2, "attention_servers": )",
                                             attention, "}"));
  return path;
}

struct PrefixCase {
  std::string fixture;
  int prefill = 0;  // prefill servers; 0: one attention server of role both
  int decode = 0;   // decode servers
  int micro_batches = 1;  // of the decode (or both) servers
  std::string Name() const {
    std::string name = fixture + "_" +
                       (prefill == 0 ? "colocated"
                                     : std::to_string(prefill) + "p" +
                                           std::to_string(decode) + "d") +
                       "_m" + std::to_string(micro_batches);
    for (char& ch : name) {
      if (ch == '-') ch = '_';
    }
    return name;
  }
};
void PrintTo(const PrefixCase& c, std::ostream* os) { *os << c.Name(); }

// The attention servers of a case, as a topology's JSON list.
std::string AttentionServersJson(const PrefixCase& c) {
  std::vector<std::string> servers;
  const std::string m = absl::StrCat(R"(, "micro_batches": )", c.micro_batches);
  if (c.prefill == 0) {
    servers.push_back(absl::StrCat(R"({"name": "attention-0", "role": "both")", m, "}"));
  }
  for (int i = 0; i < c.prefill; ++i) {
    servers.push_back(absl::StrCat(R"({"name": "prefill-)", i, R"(", "role": "prefill"})"));
  }
  for (int i = 0; i < c.decode; ++i) {
    servers.push_back(
        absl::StrCat(R"({"name": "decode-)", i, R"(", "role": "decode")", m, "}"));
  }
  return absl::StrCat("[", absl::StrJoin(servers, ", "), "]");
}

class DisaggregationTest : public ::testing::TestWithParam<PrefixCase> {};

TEST_P(DisaggregationTest, SharedPrefixStreamsEqualTheEngineAndHitTheCache) {
  const std::string dir = FixtureDir(GetParam().fixture);
  std::unique_ptr<Engine> engine = testing::LoadReferenceEngine(dir);
  ASSERT_NE(engine, nullptr);
  testing::TempDir topology_dir;
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      WriteTopology(topology_dir, AttentionServersJson(GetParam())), dir);
  ASSERT_NE(cluster, nullptr);

  // A 40-token system prompt shared by every request, then tails of
  // different lengths; a few requests repeat a whole prompt.
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> id(3, 400);
  std::vector<int32_t> shared(40);
  for (int32_t& t : shared) t = id(rng);
  struct Stream {
    std::vector<int32_t> prompt;
    int max_tokens;
  };
  std::vector<Stream> streams;
  for (int i = 0; i < 10; ++i) {
    std::vector<int32_t> prompt = shared;
    for (int j = 0; j < 1 + 5 * (i % 4); ++j) prompt.push_back(id(rng));
    streams.push_back({prompt, 3 + 2 * i});
  }
  streams.push_back(streams[2]);
  streams.push_back(streams[5]);

  // The first request alone, so that the shared prefix is cached before the
  // others arrive.
  const StreamResult warm =
      testing::RunGenerate(cluster->gateway(), testing::GreedyRequest(shared, 4));
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  EXPECT_EQ(warm.tokens, testing::EngineTokens(*engine, shared, 4));

  std::vector<StreamResult> results(streams.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < streams.size(); ++i) {
    clients.emplace_back([&, i] {
      results[i] = testing::RunGenerate(
          cluster->gateway(), testing::GreedyRequest(streams[i].prompt, streams[i].max_tokens));
    });
  }
  for (std::thread& t : clients) t.join();
  int cached_requests = 0;
  for (size_t i = 0; i < streams.size(); ++i) {
    const StreamResult& r = results[i];
    ASSERT_TRUE(r.status.ok()) << i << ": " << r.status.error_message();
    EXPECT_EQ(r.tokens, testing::EngineTokens(*engine, streams[i].prompt, streams[i].max_tokens))
        << "stream " << i;
    EXPECT_EQ(r.finish_messages, 1) << i;
    EXPECT_EQ(r.usage.completion_tokens(), streams[i].max_tokens) << i;
    EXPECT_EQ(r.usage.prompt_tokens(), static_cast<int>(streams[i].prompt.size())) << i;
    EXPECT_EQ(r.usage.cached_tokens() % 16, 0) << i;  // whole blocks
    EXPECT_LT(r.usage.cached_tokens(), static_cast<int>(streams[i].prompt.size())) << i;
    if (r.usage.cached_tokens() > 0) ++cached_requests;
    // Disaggregated: the whole prompt's K/V moved, and the usage says so.
    if (GetParam().prefill > 0) {
      if (GetParam().fixture == "tiny-mixtral") {
        // 2 layers x K and V x 2 KV heads x head_dim 16 x float32.
        constexpr int64_t kKvBytesPerToken = 2 * 2 * 2 * 16 * 4;
        EXPECT_GE(r.usage.transfer_bytes(),
                  static_cast<int64_t>(streams[i].prompt.size()) * kKvBytesPerToken)
            << i;
      }
      EXPECT_GT(r.usage.transfer_bytes(), 0) << i;
    } else {
      EXPECT_EQ(r.usage.transfer_bytes(), 0) << i;
    }
  }
  // The prefix cache was hit, and the servers counted it.
  EXPECT_GT(cached_requests, 0);
  int64_t hit_tokens = 0;
  const std::string prefill_role =
      cluster->attention_names("prefill").empty() ? "both" : "prefill";
  for (const std::string& name : cluster->attention_names(prefill_role)) {
    hit_tokens += cluster->AttentionLoad(name).prefix_hit_tokens();
  }
  EXPECT_GE(hit_tokens, 32 * cached_requests);
  // With micro-batches, steps of several sequences ran as ping-pong.
  if (GetParam().micro_batches > 1) {
    int64_t split_steps = 0;
    for (const std::string& name : cluster->attention_names()) {
      split_steps += cluster->AttentionLoad(name).micro_batched_steps();
    }
    EXPECT_GT(split_steps, 0);
  }
  EXPECT_TRUE(cluster->WaitForIdleKv());
}

std::vector<PrefixCase> PrefixCases() {
  std::vector<PrefixCase> cases;
  for (const char* fixture : {"tiny-mixtral", "tiny-qwen2-moe"}) {
    for (auto [prefill, decode] : {std::pair{1, 1}, std::pair{1, 2}, std::pair{2, 1},
                                   std::pair{0, 0}}) {
      for (int m : {1, 2}) cases.push_back({fixture, prefill, decode, m});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Topologies, DisaggregationTest, ::testing::ValuesIn(PrefixCases()),
                         [](const auto& info) { return info.param.Name(); });

std::vector<int32_t> LongPrompt(int n) {
  std::vector<int32_t> prompt(n);
  for (int i = 0; i < n; ++i) prompt[i] = 3 + (i * 37) % 500;
  return prompt;
}

TEST(DisaggregationFailureTest, KilledPrefillServerFailsTheRequestAndFreesTheReservation) {
  // 1p1d, with a lease of an hour: what frees the reservation can only be
  // the failed Prefill call.
  testing::TempDir dir;
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      WriteTopology(dir, absl::StrCat(R"([{"name": "prefill-0", "role": "prefill"},
               {"name": "decode-0", "role": "decode", )",
                                      kHourLease, "}]")),
      FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const v1::AttentionLoad baseline = cluster->AttentionLoad("decode-0");
  const pid_t prefill = cluster->pid("prefill-0");
  ASSERT_GT(prefill, 0);
  // Stopped, the prefill server cannot have started when it is killed.
  ASSERT_EQ(kill(prefill, SIGSTOP), 0);
  StreamResult result;
  Clock::time_point end;
  std::thread client([&] {
    result = testing::RunGenerate(cluster->gateway(), testing::GreedyRequest(LongPrompt(50), 8));
    end = Clock::now();
  });
  // The decode server reserved the request's blocks.
  EXPECT_TRUE(Eventually([&] { return cluster->AttentionLoad("decode-0").running() == 1; }));
  EXPECT_LT(cluster->AttentionLoad("decode-0").kv_blocks_free(), baseline.kv_blocks_free());
  const Clock::time_point killed = Clock::now();
  ASSERT_EQ(kill(prefill, SIGKILL), 0);
  client.join();
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(result.status.error_message(), HasSubstr("prefill server"));
  EXPECT_TRUE(result.tokens.empty());
  // Long before the hour's lease: the failed Prefill call cancels the
  // decode.
  EXPECT_LT(std::chrono::duration<double>(end - killed).count(), 120.0);
  EXPECT_TRUE(Eventually([&] {
    const v1::AttentionLoad load = cluster->AttentionLoad("decode-0");
    return load.kv_blocks_free() == baseline.kv_blocks_free() && load.running() == 0;
  }));
}

TEST(DisaggregationFailureTest, AReservationWhoseKvNeverComesFailsAtTheEndOfItsLease) {
  testing::TempDir dir;
  // The request the test starves must outlive the lease, and the one after
  // it, on the same decode server, must not: a lease of 10 s (the starved
  // request takes that long) leaves that one's prefill and transfer, a few
  // milliseconds, all of it on a busy machine.
  const std::string topology = WriteTopology(
      dir, R"([{"name": "prefill-0", "role": "prefill"},
               {"name": "decode-0", "role": "decode", "kv_lease_seconds": 10}])");
  std::unique_ptr<LaunchedCluster> cluster =
      LaunchedCluster::Start(topology, FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const v1::AttentionLoad baseline = cluster->AttentionLoad("decode-0");
  const pid_t prefill = cluster->pid("prefill-0");
  ASSERT_EQ(kill(prefill, SIGSTOP), 0);  // the prefill never answers
  const StreamResult result =
      testing::RunGenerate(cluster->gateway(), testing::GreedyRequest(LongPrompt(30), 4));
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(result.status.error_message(), HasSubstr("lease"));
  EXPECT_TRUE(Eventually([&] {
    const v1::AttentionLoad load = cluster->AttentionLoad("decode-0");
    return load.kv_blocks_free() == baseline.kv_blocks_free() && load.running() == 0;
  }));
  ASSERT_EQ(kill(prefill, SIGCONT), 0);
  // The prefill server frees what the cancelled prefill held, and the
  // cluster serves again.
  EXPECT_TRUE(cluster->WaitForIdleKv());
  const StreamResult ok =
      testing::RunGenerate(cluster->gateway(), testing::GreedyRequest(LongPrompt(30), 4));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

TEST(DisaggregationFailureTest, CancellingAfterPrefillBeforeDecodeFreesBothSides) {
  testing::TempDir dir;
  // Small prefill chunks make the prefill long enough to stop the decode
  // server while it runs.
  const std::string topology = WriteTopology(
      dir, R"([{"name": "prefill-0", "role": "prefill", "prefill_chunk_tokens": 8},
               {"name": "decode-0", "role": "decode"}])");
  std::unique_ptr<LaunchedCluster> cluster =
      LaunchedCluster::Start(topology, FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const int64_t prefilled_before = cluster->AttentionLoad("prefill-0").generated_tokens();
  const pid_t decode = cluster->pid("decode-0");
  ASSERT_GT(decode, 0);

  grpc::ClientContext context;
  auto reader = cluster->gateway().Generate(&context, testing::GreedyRequest(LongPrompt(2000), 8));
  // Once the prefill runs (the decode server has reserved), stop the decode
  // server: the prefill finishes, but its K/V cannot be taken.
  ASSERT_TRUE(Eventually([&] { return cluster->AttentionLoad("prefill-0").running() == 1; }));
  ASSERT_EQ(kill(decode, SIGSTOP), 0);
  EXPECT_TRUE(Eventually([&] {
    const v1::AttentionLoad load = cluster->AttentionLoad("prefill-0");
    return load.generated_tokens() == prefilled_before + 1 && load.running() == 0;
  }));
  context.TryCancel();
  v1::GenerateResponse response;
  int tokens = 0;
  while (reader->Read(&response)) tokens += response.token_ids_size();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(tokens, 0);
  ASSERT_EQ(kill(decode, SIGCONT), 0);
  EXPECT_TRUE(cluster->WaitForIdleKv());  // every block free on both sides
  const StreamResult ok =
      testing::RunGenerate(cluster->gateway(), testing::GreedyRequest(LongPrompt(40), 4));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

TEST(DisaggregationSoakTest, RandomCancellationsLeakNoBlock) {
  const std::string dir = FixtureDir("tiny-mixtral");
  // 2p1d, with a lease of an hour: 50 requests at once queue for the
  // prefill servers for as long as this machine takes, and only the
  // cancellations may free their blocks.
  testing::TempDir topology_dir;
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      WriteTopology(topology_dir,
                    absl::StrCat(R"([{"name": "prefill-0", "role": "prefill"},
               {"name": "prefill-1", "role": "prefill"},
               {"name": "decode-0", "role": "decode", )",
                                 kHourLease, "}]")),
      dir);
  ASSERT_NE(cluster, nullptr);
  std::mt19937 rng(2026);
  int cancelled = 0, completed = 0;
  for (int round = 0; round < 5; ++round) {
    constexpr int kRequests = 50;
    std::vector<int> delays_us(kRequests), max_tokens(kRequests);
    std::vector<std::vector<int32_t>> prompts(kRequests);
    for (int i = 0; i < kRequests; ++i) {
      // Anywhere from before the reservation to after the last token.
      delays_us[i] = std::uniform_int_distribution<int>(0, 400000)(rng);
      max_tokens[i] = std::uniform_int_distribution<int>(2, 60)(rng);
      prompts[i] = LongPrompt(std::uniform_int_distribution<int>(5, 120)(rng));
      prompts[i][0] = 3 + i;  // different prompts, some shared prefixes
    }
    std::atomic<int> round_cancelled{0}, round_completed{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < kRequests; ++i) {
      clients.emplace_back([&, i] {
        grpc::ClientContext context;
        auto reader =
            cluster->gateway().Generate(&context,
                                        testing::GreedyRequest(prompts[i], max_tokens[i]));
        std::thread canceller([&] {
          std::this_thread::sleep_for(std::chrono::microseconds(delays_us[i]));
          context.TryCancel();
        });
        v1::GenerateResponse response;
        while (reader->Read(&response)) {
        }
        const grpc::Status status = reader->Finish();
        canceller.join();
        if (status.ok()) {
          ++round_completed;
        } else {
          EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
          ++round_cancelled;
        }
      });
    }
    for (std::thread& t : clients) t.join();
    cancelled += round_cancelled;
    completed += round_completed;
    ASSERT_TRUE(cluster->WaitForIdleKv()) << "round " << round << ": blocks leaked";
  }
  EXPECT_GT(cancelled, 0);
  // A request afterwards succeeds, and is still exact.
  std::unique_ptr<Engine> engine = testing::LoadReferenceEngine(dir);
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> prompt = LongPrompt(33);
  const StreamResult ok =
      testing::RunGenerate(cluster->gateway(), testing::GreedyRequest(prompt, 10));
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.tokens, testing::EngineTokens(*engine, prompt, 10));
  std::printf("soak: %d cancelled, %d completed\n", cancelled, completed);
}

}  // namespace
}  // namespace moe
