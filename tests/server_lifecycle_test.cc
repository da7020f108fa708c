// Health and lifecycle of the real server processes:
//   * while a server waits for its peers it is bound and answers health
//     NOT_SERVING, and it turns SERVING once they are there;
//   * SIGTERM drains: health NOT_SERVING at once, new calls refused with
//     UNAVAILABLE, the call in flight finishes with every token, and the
//     process exits 0.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/rpc/channel_util.h"
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

// The port in `path` once the file exists; nullopt after about 120 s
// (against hangs only).
std::optional<int> WaitForPortFile(const std::string& path) {
  for (int i = 0; i < 1200; ++i) {
    std::ifstream in(path);
    int port = 0;
    if (in >> port && port > 0) return port;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return std::nullopt;
}

std::string Binary(const std::string& name) {
  return absl::StrCat(MOE_BIN_DIR, "/", name);
}

TEST(ServerLifecycleTest, NotServingWhileWaitingForPeersThenServing) {
  testing::TempDir dir;
  const std::string model = testing::FixtureDir("tiny-mixtral");
  // The expert server's port is fixed up front (and is free: the expert
  // server binds it later); the router is started first and waits for it.
  const std::string expert_port_file = dir.Join("expert.port");
  std::unique_ptr<ChildProcess> probe = ChildProcess::Start(
      {Binary("expert_server"), "--model=" + model, "--experts=all",
       "--metrics_port=-1", "--port_file=" + expert_port_file});
  ASSERT_NE(probe, nullptr);
  const std::optional<int> expert_port = WaitForPortFile(expert_port_file);
  ASSERT_TRUE(expert_port.has_value());
  probe->Signal(SIGTERM);
  ASSERT_TRUE(probe->Wait(30).has_value());
  const std::string expert_address = absl::StrCat("127.0.0.1:", *expert_port);

  const std::string router_port_file = dir.Join("router.port");
  std::unique_ptr<ChildProcess> router = ChildProcess::Start(
      {Binary("router"), "--model=" + model,
       "--expert_servers=" + expert_address, "--connect_timeout=60",
       "--metrics_port=-1", "--port_file=" + router_port_file});
  ASSERT_NE(router, nullptr);
  const std::optional<int> router_port = WaitForPortFile(router_port_file);
  ASSERT_TRUE(router_port.has_value()) << router->StderrText();
  const std::string router_address = absl::StrCat("127.0.0.1:", *router_port);
  ASSERT_TRUE(router->ReadUntilContains("health NOT_SERVING", 60));
  // Bound and answering, but not serving: its expert server is missing.
  // (A generous deadline: a slow answer is not the answer checked here.)
  for (int i = 0; i < 3; ++i) {
    const absl::Status health = CheckServing(router_address, 30);
    EXPECT_FALSE(health.ok());
    EXPECT_TRUE(absl::StrContains(health.message(), "NOT_SERVING"))
        << health.message();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }

  std::unique_ptr<ChildProcess> expert = ChildProcess::Start(
      {Binary("expert_server"), "--model=" + model, "--experts=all",
       "--metrics_port=-1", "--listen=" + expert_address});
  ASSERT_NE(expert, nullptr);
  EXPECT_TRUE(WaitForServing(router_address, 60).ok()) << router->StderrText();
  EXPECT_TRUE(router->ReadUntilContains("listening on " + router_address, 60))
      << router->stdout_text();

  for (ChildProcess* process : {router.get(), expert.get()}) {
    process->Signal(SIGTERM);
    const std::optional<int> status = process->Wait(60);
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
    EXPECT_TRUE(absl::StrContains(process->ReadAll(5), "stopped"));
  }
}

TEST(ServerLifecycleTest, SigtermDrainsTheGateway) {
  // The gateway may drain for as long as the stream takes (an hour): the
  // test waits on the stream's end, never on how fast this machine decodes.
  testing::TempDir dir;
  const std::string topology = dir.Join("topology.json");
  std::ofstream(topology) << R"({
    "expert_servers": [{"name": "expert-0", "experts": "all"}],
    "attention_servers": 1,
    "gateway": {"drain_seconds": 3600}
  })";
  std::unique_ptr<LaunchedCluster> cluster = LaunchedCluster::Start(
      topology, testing::FixtureDir("tiny-mixtral"));
  ASSERT_NE(cluster, nullptr);
  const std::string gateway = cluster->address("gateway");
  const pid_t gateway_pid = cluster->pid("gateway");
  ASSERT_GT(gateway_pid, 0);
  const pid_t attention_pid = cluster->pid("attention-0");
  ASSERT_GT(attention_pid, 0);
  const std::string metrics = cluster->metrics_url("gateway");
  ASSERT_FALSE(metrics.empty());
  // The OpenAI API's /health: 200 while serving, 503 while draining.
  std::string http_health = cluster->openai_url();
  ASSERT_FALSE(http_health.empty());
  http_health.replace(http_health.rfind("/v1"), 3, "/health");
  EXPECT_TRUE(testing::HttpGet(http_health).has_value());

  // A long stream, read by this thread; once the gateway has admitted it
  // (its in-flight gauge says so), the attention server is stopped
  // (SIGSTOP), so that the stream is still in flight during every check of
  // the drain below however fast or slow this machine is, and continued
  // (SIGCONT) after them. The guard continues it on every path out.
  constexpr int kTokens = 3000;
  struct Continue {
    pid_t pid = -1;
    ~Continue() {
      if (pid > 0) kill(pid, SIGCONT);
    }
  } continue_attention;
  testing::StreamResult long_stream;
  std::atomic<bool> stream_ended{false};
  std::thread reader([&] {
    long_stream = testing::RunGenerate(
        cluster->gateway(), testing::GreedyRequest({1, 15, 27, 300}, kTokens),
        /*timeout_seconds=*/3600);
    stream_ended = true;
  });
  bool admitted = false;
  while (!admitted && !stream_ended) {
    admitted = testing::GatewayInFlight(metrics) >= 1;
    if (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (admitted) {
    continue_attention.pid = attention_pid;
    admitted = kill(attention_pid, SIGSTOP) == 0 && !stream_ended &&
               testing::GatewayInFlight(metrics) >= 1;
  }
  if (!admitted) {
    if (continue_attention.pid > 0) kill(attention_pid, SIGCONT);
    reader.join();
    FAIL() << "the stream ended before the gateway counted it in flight and "
              "its attention server was stopped: "
           << long_stream.status.error_message();
  }
  const bool signalled = kill(gateway_pid, SIGTERM) == 0;
  EXPECT_TRUE(signalled);

  // Draining: health NOT_SERVING and new calls refused, while the stream
  // goes on (its attention server stopped, it cannot end). The polling
  // bound is against hangs only; a slow answer is not the answer checked.
  bool saw_not_serving = false;
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (signalled && !saw_not_serving &&
         std::chrono::steady_clock::now() < give_up) {
    const absl::Status health = CheckServing(gateway, 30);
    saw_not_serving = absl::StrContains(health.message(), "NOT_SERVING");
    if (!saw_not_serving) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_TRUE(saw_not_serving);
  EXPECT_FALSE(testing::HttpGet(http_health).has_value())
      << "the HTTP /health still answers 200 while draining";
  auto channel = MakeChannel(gateway);
  auto stub = v1::Inference::NewStub(channel);
  // Refused at once; admitted, it would wait on the stopped attention
  // server until this deadline.
  const testing::StreamResult refused = testing::RunGenerate(
      *stub, testing::GreedyRequest({1, 2, 3}, 4), 60);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();
  EXPECT_TRUE(absl::StrContains(refused.status.error_message(), "draining"))
      << refused.status.error_message();
  EXPECT_FALSE(stream_ended) << "the stream ended while its server was stopped";

  EXPECT_EQ(kill(attention_pid, SIGCONT), 0);
  continue_attention.pid = -1;
  reader.join();
  EXPECT_TRUE(long_stream.status.ok()) << long_stream.status.error_message();
  EXPECT_EQ(static_cast<int>(long_stream.tokens.size()), kTokens);
  EXPECT_EQ(long_stream.finish_reason, v1::FINISH_REASON_LENGTH);

  // The gateway exits 0 once the stream is done (the launcher reports it;
  // the bound is against hangs only).
  bool exited = false;
  for (int i = 0; i < 600 && !exited; ++i) {
    exited = absl::StrContains(cluster->launcher_stderr(),
                               "gateway (pid " + std::to_string(gateway_pid) +
                                   ") exited with status 0");
    if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(exited) << cluster->launcher_stderr();
  stub.reset();
  channel.reset();
}

}  // namespace
}  // namespace moe
