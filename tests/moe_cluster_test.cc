// The real moe-cluster binary: bad input, start-up, supervision and stop.
//
// Most tests run the real expert_server and router with a fake attention
// server and gateway (tests/fake_server_main.cc, symlinked into a test bin
// dir), so that the launcher is tested on its own; RealBinaries* runs the
// whole real cluster. Every timeout here only guards against hangs.
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/rpc/channel_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/process_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using ::moe::testing::ChildPids;
using ::moe::testing::ChildProcess;
using ::moe::testing::ProcessExists;
using ::moe::testing::RunProcess;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr double kHang = 120;  // seconds; against hangs only

std::string ClusterBin() { return MOE_CLUSTER_BIN; }
std::string BinDir() { return fs::path(ClusterBin()).parent_path().string(); }
std::string DeployFile(const std::string& name) {
  return std::string(MOE_SOURCE_DIR) + "/deploy/local/" + name;
}
std::string Mixtral() { return moe::testing::FixtureDir("tiny-mixtral"); }

// Server name -> address, from the listing before "ready".
std::map<std::string, std::string> Addresses(
    const std::vector<std::string>& lines) {
  std::map<std::string, std::string> out;
  for (const std::string& line : lines) {
    if (line == "ready") break;
    if (absl::StartsWith(line, "moe-cluster:")) continue;
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    if (parts.size() < 2 || !absl::EndsWith(parts[0], ":")) continue;
    out[parts[0].substr(0, parts[0].size() - 1)] = parts[1];
  }
  return out;
}

class MoeClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Orphans of a moe-cluster that failed to reap come to this process,
    // where the checks below see them.
    prctl(PR_SET_CHILD_SUBREAPER, 1);
  }
  void TearDown() override {
    int status = 0;
    while (waitpid(-1, &status, WNOHANG) > 0) {
    }
  }

  // A bin dir with the real expert_server and router (fakes too with
  // `all_fake`) and the fake attention_server and gateway.
  std::string FakeBinDir(bool all_fake = false) {
    const std::string dir = tmp_.Join("bin");
    fs::create_directories(dir);
    fs::create_symlink(all_fake ? FAKE_SERVER_BIN : BinDir() + "/expert_server",
                       dir + "/expert_server");
    fs::create_symlink(all_fake ? FAKE_SERVER_BIN : BinDir() + "/router",
                       dir + "/router");
    fs::create_symlink(FAKE_SERVER_BIN, dir + "/attention_server");
    fs::create_symlink(FAKE_SERVER_BIN, dir + "/gateway");
    return dir;
  }

  std::string LogDir() const { return tmp_.Join("logs"); }
  std::string Log(const std::string& server) const {
    return moe::testing::ReadFileOrDie(LogDir() + "/" + server + ".log");
  }

  std::unique_ptr<ChildProcess> Up(const std::string& topology,
                                   const std::vector<std::string>& extra = {},
                                   const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv = {ClusterBin(), "up",      "--topology",
                                     topology,     "--model", Mixtral(),
                                     "--log_dir",  LogDir()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return ChildProcess::Start(argv, env);
  }

  // Waits for the launcher to end; its exit code (-1 if it did not exit).
  static int ExitCode(ChildProcess& cluster) {
    std::optional<int> status = cluster.Wait(kHang);
    EXPECT_TRUE(status.has_value()) << "moe-cluster did not exit";
    return status.has_value() && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  }

  static void ExpectAllGone(const std::vector<pid_t>& pids) {
    for (pid_t pid : pids) {
      EXPECT_FALSE(ProcessExists(pid)) << "child " << pid << " outlived "
                                       << "moe-cluster";
    }
  }

  moe::testing::TempDir tmp_;
};

TEST_F(MoeClusterTest, BadInputExitsWith2AndSaysWhat) {
  moe::testing::TempDir dir;
  const std::string bad = dir.Join("bad.json");
  moe::testing::WriteFileOrDie(bad,
                               R"({"expert_servers": 1, "attention_servers": 1,
               "router": {"capacity_factor": -0.5}})");
  const std::string broken = dir.Join("broken.json");
  moe::testing::WriteFileOrDie(broken, "{\"expert_servers\": 1,,}");
  const std::string empty_bin = dir.Join("empty-bin");
  fs::create_directories(empty_bin);
  const std::string good = DeployFile("one-expert-server.json");
  const std::string no_model = dir.Join("no-model");
  fs::create_directories(no_model);
  const struct {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{}, "missing command"},
      {{"down"}, "unknown command \"down\""},
      {{"up", "--topolgy", good}, "unknown flag --topolgy"},
      {{"up", "--model", Mixtral()}, "--topology is required"},
      {{"up", "--topology", good}, "--model is required"},
      {{"up", "--topology", good, "--model", Mixtral(), "--startup_timeout",
        "soon"},
       "--startup_timeout"},
      {{"up", "--topology", dir.Join("absent.json"), "--model", Mixtral()},
       "topology " + dir.Join("absent.json") + ": cannot read"},
      {{"up", "--topology", broken, "--model", Mixtral()},
       "topology " + broken + ": not valid JSON"},
      {{"up", "--topology", bad, "--model", Mixtral()},
       "topology " + bad + ": router.capacity_factor: must be a finite number"},
      {{"up", "--topology", good, "--model", no_model},
       "--model: no config.json in " + no_model},
      {{"up", "--topology", good, "--model", Mixtral(), "--bin_dir", empty_bin},
       "--bin_dir: no executable expert_server in " + empty_bin},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {ClusterBin()};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const moe::testing::ProcessResult result = RunProcess(argv);
    EXPECT_EQ(result.exit_code, 2) << absl::StrJoin(c.args, " ");
    EXPECT_THAT(result.err, HasSubstr(c.message)) << absl::StrJoin(c.args, " ");
  }
}

TEST_F(MoeClusterTest, HyphenatedFlagsAreAccepted) {
  moe::testing::TempDir dir;
  const moe::testing::ProcessResult result =
      RunProcess({ClusterBin(), "up", "--topology", dir.Join("absent.json"),
                  "--model", Mixtral(), "--startup-timeout=5"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_THAT(result.err, HasSubstr("absent.json: cannot read"));
}

// Needs the real attention_server and gateway binaries.
TEST_F(MoeClusterTest, RealBinariesStartServeAndStop) {
  for (const char* binary :
       {"expert_server", "router", "attention_server", "gateway"}) {
    ASSERT_TRUE(fs::exists(BinDir() + "/" + binary))
        << BinDir() << "/" << binary
        << " is missing: this end-to-end test runs the real server binaries "
           "(build all targets)";
  }
  std::unique_ptr<ChildProcess> cluster =
      Up(DeployFile("one-expert-server.json"));
  ASSERT_NE(cluster, nullptr);
  std::optional<std::vector<std::string>> lines =
      cluster->ReadUntilLine("ready", kHang);
  ASSERT_TRUE(lines.has_value())
      << cluster->stdout_text() << cluster->StderrText();
  std::map<std::string, std::string> addresses = Addresses(*lines);
  ASSERT_EQ(addresses.size(), 4u) << cluster->stdout_text();
  EXPECT_THAT(*lines, ::testing::Contains(StartsWith("expert-0: 127.0.0.1:")));
  EXPECT_THAT(*lines, ::testing::Contains(HasSubstr("(experts 0:0-7,1:0-7)")));
  EXPECT_TRUE(absl::StartsWith(addresses["gateway"], "127.0.0.1:"));
  for (const auto& [name, address] : addresses) {
    EXPECT_TRUE(CheckServing(address, kHang).ok())
        << name << " at " << address;
  }
  const std::vector<pid_t> children = ChildPids(cluster->pid());
  EXPECT_EQ(children.size(), 4u);

  cluster->Signal(SIGTERM);
  EXPECT_TRUE(cluster->ReadUntilLine("stopped", kHang).has_value())
      << cluster->StderrText();
  EXPECT_EQ(ExitCode(*cluster), 0) << cluster->StderrText();
  ExpectAllGone(children);
  EXPECT_TRUE(ChildPids(getpid()).empty());
}

TEST_F(MoeClusterTest, StartsStagesInOrderWithTheTopologyFlags) {
  const std::string topology = tmp_.Join("t.json");
  moe::testing::WriteFileOrDie(topology, R"({
    "expert_servers": 2, "expert_threads": 1,
    "router": {"capacity_factor": 0.5, "overflow": "drop"},
    "attention_servers": [{"name": "att-a", "kv_cache_mb": 64},
                          {"name": "att-b", "max_running": 3}]})");
  std::unique_ptr<ChildProcess> cluster =
      Up(topology, {"--bin_dir", FakeBinDir()});
  ASSERT_NE(cluster, nullptr);
  std::optional<std::vector<std::string>> lines =
      cluster->ReadUntilLine("ready", kHang);
  ASSERT_TRUE(lines.has_value()) << cluster->StderrText();
  std::map<std::string, std::string> a = Addresses(*lines);
  ASSERT_EQ(a.size(), 6u) << cluster->stdout_text();
  // Real expert servers and router: their lines name their /metrics URL.
  EXPECT_THAT(*lines, ::testing::Contains(::testing::MatchesRegex(
                          "expert-0: " + a["expert-0"] +
                          " \\(experts 0:0,0:2,0:4,0:6,1:0,1:2,1:4,1:6\\) "
                          "metrics http://127\\.0\\.0\\.1:[0-9]+/metrics")));
  EXPECT_THAT(*lines, ::testing::Contains(::testing::MatchesRegex(
                          "router: " + a["router"] +
                          " metrics http://127\\.0\\.0\\.1:[0-9]+/metrics")));
  EXPECT_THAT(*lines,
              ::testing::Contains("att-b: " + a["att-b"] + " (role both)"));
  // The last two lines are exactly these.
  ASSERT_GE(lines->size(), 2u);
  EXPECT_THAT((*lines)[lines->size() - 2],
              ::testing::MatchesRegex("gateway: " + a["gateway"] +
                                      " openai http://127\\.0\\.0\\.1:[0-9]+/v1"));
  EXPECT_EQ(lines->back(), "ready");

  // The fakes checked that their dependencies were SERVING and logged
  // their arguments.
  const std::string model = "--model=" + fs::absolute(Mixtral()).string();
  EXPECT_THAT(
      Log("att-a"),
      StartsWith(absl::StrCat(
          "fake attention_server: ", model,
          " --role=both --kv_cache_mb=64 --router=", a["router"],
          " --listen=127.0.0.1:0 --port_file=", LogDir(),
          "/att-a.port --metrics_port=0 --metrics_port_file=", LogDir(),
          "/att-a.metrics_port\n")));
  EXPECT_THAT(Log("att-b"), HasSubstr("--role=both --max_running=3 --router="));
  EXPECT_THAT(Log("gateway"),
              StartsWith(absl::StrCat("fake gateway: ", model,
                                      " --attention_servers=", a["att-a"], ",",
                                      a["att-b"], " --listen=127.0.0.1:0")));
  EXPECT_THAT(Log("expert-1"), HasSubstr("expert_server"));
  const std::vector<pid_t> children = ChildPids(cluster->pid());
  EXPECT_EQ(children.size(), 6u);
  for (pid_t pid : children) {
    EXPECT_THAT(moe::testing::CommandLine(pid), StartsWith(tmp_.Join("bin/")));
  }

  cluster->Signal(SIGINT);
  EXPECT_TRUE(cluster->ReadUntilLine("stopped", kHang).has_value());
  EXPECT_EQ(ExitCode(*cluster), 0) << cluster->StderrText();
  ExpectAllGone(children);
}

TEST_F(MoeClusterTest, AServerFailingAtStartUpIsReportedAndAllIsStopped) {
  std::unique_ptr<ChildProcess> cluster =
      Up(DeployFile("demo.json"), {"--bin_dir", FakeBinDir()},
         {"MOE_FAKE_EXIT=attention_server"});
  ASSERT_NE(cluster, nullptr);
  EXPECT_EQ(ExitCode(*cluster), 1);
  const std::string err = cluster->StderrText();
  EXPECT_THAT(err, HasSubstr("moe-cluster: attention-0 (pid "));
  EXPECT_THAT(err, HasSubstr("exited during start-up with status 3; log: " +
                             LogDir() + "/attention-0.log"));
  EXPECT_THAT(err, HasSubstr("| fake attention_server: failing on purpose"));
  EXPECT_THAT(cluster->ReadAll(kHang), Not(HasSubstr("ready")));
  EXPECT_TRUE(ChildPids(getpid()).empty());
}

TEST_F(MoeClusterTest, StartUpTimesOutNamingTheServer) {
  // All fakes, so that only the gateway can be the one not ready in time.
  // The others must be ready within the timeout, however busy this machine
  // is: it is sized from a start of the same cluster measured here (ten
  // times that, and at least 10 s).
  const std::string bin = FakeBinDir(/*all_fake=*/true);
  const auto probe_start = std::chrono::steady_clock::now();
  std::unique_ptr<ChildProcess> probe =
      Up(DeployFile("one-expert-server.json"), {"--bin_dir", bin});
  ASSERT_NE(probe, nullptr);
  ASSERT_TRUE(probe->ReadUntilLine("ready", kHang).has_value())
      << probe->StderrText();
  const double measured = std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - probe_start)
                              .count();
  probe->Signal(SIGTERM);
  EXPECT_EQ(ExitCode(*probe), 0) << probe->StderrText();
  probe.reset();
  const int timeout =
      std::max(10, static_cast<int>(std::ceil(10 * measured)));

  std::unique_ptr<ChildProcess> cluster =
      Up(DeployFile("one-expert-server.json"),
         {"--bin_dir", bin, "--startup_timeout", std::to_string(timeout)},
         {"MOE_FAKE_HANG=gateway"});
  ASSERT_NE(cluster, nullptr);
  EXPECT_EQ(ExitCode(*cluster), 1);
  EXPECT_THAT(cluster->StderrText(),
              AllOf(HasSubstr("moe-cluster: gateway (pid "),
                    HasSubstr(absl::StrCat("did not become ready within ",
                                           timeout,
                                           " s (no port file yet)")),
                    HasSubstr("| fake gateway: hanging")));
  EXPECT_TRUE(ChildPids(getpid()).empty());
}

TEST_F(MoeClusterTest, StopDuringStartUpStopsWhatWasStarted) {
  std::unique_ptr<ChildProcess> cluster =
      Up(DeployFile("one-expert-server.json"), {"--bin_dir", FakeBinDir()},
         {"MOE_FAKE_HANG=gateway"});
  ASSERT_NE(cluster, nullptr);
  const std::string log = LogDir() + "/gateway.log";
  for (int i = 0; i < 12000; ++i) {
    if (fs::exists(log) &&
        absl::StrContains(moe::testing::ReadFileOrDie(log), "hanging")) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::vector<pid_t> children = ChildPids(cluster->pid());
  EXPECT_EQ(children.size(), 4u);
  cluster->Signal(SIGTERM);
  EXPECT_TRUE(cluster->ReadUntilLine("stopped", kHang).has_value());
  EXPECT_EQ(ExitCode(*cluster), 0);
  EXPECT_THAT(cluster->stdout_text(), Not(HasSubstr("ready")));
  ExpectAllGone(children);
}

TEST_F(MoeClusterTest, AnUnexpectedExitIsReportedAndTheRestKeepsRunning) {
  const std::string bin = FakeBinDir();
  std::unique_ptr<ChildProcess> cluster =
      Up(DeployFile("one-expert-server.json"), {"--bin_dir", bin});
  ASSERT_NE(cluster, nullptr);
  std::optional<std::vector<std::string>> lines =
      cluster->ReadUntilLine("ready", kHang);
  ASSERT_TRUE(lines.has_value()) << cluster->StderrText();
  std::map<std::string, std::string> addresses = Addresses(*lines);
  const std::vector<pid_t> children = ChildPids(cluster->pid());
  pid_t gateway = 0;
  for (pid_t pid : children) {
    if (absl::StartsWith(moe::testing::CommandLine(pid), bin + "/gateway ")) {
      gateway = pid;
    }
  }
  ASSERT_NE(gateway, 0);
  kill(gateway, SIGKILL);
  const std::string expected = absl::StrCat(
      "moe-cluster: gateway (pid ", gateway,
      ") exited with status 137 (killed by signal 9, Killed); log: ", LogDir(),
      "/gateway.log");
  for (int i = 0; i < 12000; ++i) {
    if (absl::StrContains(cluster->StderrText(), expected)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_THAT(cluster->StderrText(), HasSubstr(expected));
  EXPECT_TRUE(CheckServing(addresses["router"], kHang).ok());
  EXPECT_TRUE(CheckServing(addresses["attention-0"], kHang).ok());
  EXPECT_EQ(ChildPids(cluster->pid()).size(), 3u);

  cluster->Signal(SIGTERM);
  EXPECT_TRUE(cluster->ReadUntilLine("stopped", kHang).has_value());
  EXPECT_EQ(ExitCode(*cluster), 0);
  ExpectAllGone(children);
}

TEST_F(MoeClusterTest, AServerIgnoringSigtermIsKilledAfterTheGracePeriod) {
  std::unique_ptr<ChildProcess> cluster =
      Up(DeployFile("one-expert-server.json"),
         {"--bin_dir", FakeBinDir(), "--grace_seconds", "1"},
         {"MOE_FAKE_IGNORE_TERM=attention_server"});
  ASSERT_NE(cluster, nullptr);
  ASSERT_TRUE(cluster->ReadUntilLine("ready", kHang).has_value())
      << cluster->StderrText();
  const std::vector<pid_t> children = ChildPids(cluster->pid());
  cluster->Signal(SIGTERM);
  EXPECT_TRUE(cluster->ReadUntilLine("stopped", kHang).has_value());
  EXPECT_EQ(ExitCode(*cluster), 0);
  EXPECT_THAT(cluster->StderrText(),
              HasSubstr("moe-cluster: attention-0 did not stop within 1 s; "
                        "killed"));
  EXPECT_THAT(Log("attention-0"), HasSubstr("ignoring SIGTERM"));
  ExpectAllGone(children);
}

TEST_F(MoeClusterTest, AKilledLauncherLeavesNoOrphans) {
  std::unique_ptr<ChildProcess> cluster =
      Up(DeployFile("one-expert-server.json"), {"--bin_dir", FakeBinDir()});
  ASSERT_NE(cluster, nullptr);
  ASSERT_TRUE(cluster->ReadUntilLine("ready", kHang).has_value())
      << cluster->StderrText();
  const std::vector<pid_t> children = ChildPids(cluster->pid());
  ASSERT_EQ(children.size(), 4u);
  cluster->Signal(SIGKILL);
  cluster->Wait(kHang);
  // PR_SET_PDEATHSIG kills them; as orphans they come to this subreaper.
  for (int i = 0; i < 12000; ++i) {
    int status = 0;
    while (waitpid(-1, &status, WNOHANG) > 0) {
    }
    bool any = false;
    for (pid_t pid : children) any = any || ProcessExists(pid);
    if (!any) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ExpectAllGone(children);
}

}  // namespace
}  // namespace moe
