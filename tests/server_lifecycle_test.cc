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

// The port in `path` once the file exists; nullopt after 30 s.
std::optional<int> WaitForPortFile(const std::string& path) {
  for (int i = 0; i < 300; ++i) {
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
  ASSERT_TRUE(router->ReadUntilContains("health NOT_SERVING", 10));
  // Bound and answering, but not serving: its expert server is missing.
  for (int i = 0; i < 3; ++i) {
    const absl::Status health = CheckServing(router_address, 2);
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
  EXPECT_TRUE(router->ReadUntilContains("listening on " + router_address, 10))
      << router->stdout_text();

  for (ChildProcess* process : {router.get(), expert.get()}) {
    process->Signal(SIGTERM);
    const std::optional<int> status = process->Wait(30);
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
  const std::string metrics = cluster->metrics_url("gateway");
  ASSERT_FALSE(metrics.empty());
  // The OpenAI API's /health: 200 while serving, 503 while draining.
  std::string http_health = cluster->openai_url();
  ASSERT_FALSE(http_health.empty());
  http_health.replace(http_health.rfind("/v1"), 3, "/health");
  EXPECT_TRUE(testing::HttpGet(http_health).has_value());

  // A long stream, read by this thread; SIGTERM once the gateway has
  // admitted it (its in-flight gauge says so).
  constexpr int kTokens = 3000;
  testing::StreamResult long_stream;
  std::atomic<bool> stream_ended{false};
  std::thread reader([&] {
    long_stream = testing::RunGenerate(
        cluster->gateway(), testing::GreedyRequest({1, 15, 27, 300}, kTokens));
    stream_ended = true;
  });
  bool admitted = false;
  while (!admitted && !stream_ended) {
    admitted = testing::GatewayInFlight(metrics) >= 1;
    if (!admitted) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!admitted) {
    reader.join();
    FAIL() << "the stream ended before the gateway counted it in flight: "
           << long_stream.status.error_message();
  }
  ASSERT_EQ(kill(gateway_pid, SIGTERM), 0);

  // Draining: health NOT_SERVING and new calls refused, while the stream
  // goes on.
  bool saw_not_serving = false;
  for (int i = 0; i < 50 && !saw_not_serving; ++i) {
    const absl::Status health = CheckServing(gateway, 1);
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
  const testing::StreamResult refused = testing::RunGenerate(
      *stub, testing::GreedyRequest({1, 2, 3}, 4), 10);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();
  EXPECT_TRUE(absl::StrContains(refused.status.error_message(), "draining"))
      << refused.status.error_message();

  reader.join();
  EXPECT_TRUE(long_stream.status.ok()) << long_stream.status.error_message();
  EXPECT_EQ(static_cast<int>(long_stream.tokens.size()), kTokens);
  EXPECT_EQ(long_stream.finish_reason, v1::FINISH_REASON_LENGTH);

  // The gateway exits 0 once the stream is done (the launcher reports it).
  bool exited = false;
  for (int i = 0; i < 100 && !exited; ++i) {
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
