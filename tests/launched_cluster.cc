#include "tests/launched_cluster.h"

#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/rpc/channel_util.h"
#include "gtest/gtest.h"

namespace moe::testing {

std::unique_ptr<LaunchedCluster> LaunchedCluster::Start(
    const std::string& topology, const std::string& model_dir,
    const std::vector<std::string>& extra_args) {
  std::unique_ptr<LaunchedCluster> cluster(new LaunchedCluster());
  const std::string path = topology.empty() || topology[0] == '/'
                               ? topology
                               : std::string(MOE_SOURCE_DIR) + "/" + topology;
  std::vector<std::string> argv = {MOE_CLUSTER_BIN, "up",     "--topology",
                                   path,            "--model", model_dir};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  cluster->launcher_ = ChildProcess::Start(argv);
  if (cluster->launcher_ == nullptr) return nullptr;
  std::optional<std::vector<std::string>> lines =
      cluster->launcher_->ReadUntilLine("ready", 120);
  if (!lines.has_value()) {
    ADD_FAILURE() << topology << ": the cluster did not start.\nstdout:\n"
                  << cluster->launcher_->stdout_text() << "\nstderr:\n"
                  << cluster->launcher_->StderrText();
    return nullptr;
  }
  for (const std::string& line : *lines) {
    const size_t colon = line.find(": ");
    if (colon == std::string::npos) continue;
    const std::string name = line.substr(0, colon);
    // Not servers: "moe-cluster: topology ...", "prometheus targets: DIR".
    if (name == "moe-cluster" || name.find(' ') != std::string::npos) continue;
    std::string rest = line.substr(colon + 2);
    cluster->addresses_[name] = rest.substr(0, rest.find(' '));
    cluster->names_.push_back(name);
    const size_t metrics = rest.find(" metrics ");
    if (metrics != std::string::npos) {
      const std::string url = rest.substr(metrics + 9);
      cluster->metrics_urls_[name] = url.substr(0, url.find(' '));
    }
    const size_t openai = rest.find(" openai ");
    if (openai != std::string::npos) {
      const std::string url = rest.substr(openai + 8);
      cluster->openai_urls_[name] = url.substr(0, url.find(' '));
    }
    const size_t role = rest.find("(role ");
    if (role != std::string::npos) {
      cluster->roles_[name] =
          rest.substr(role + 6, rest.find(')', role) - role - 6);
    }
  }
  if (cluster->address("gateway").empty() || cluster->address("router").empty()) {
    ADD_FAILURE() << topology << ": no gateway or router address in:\n"
                  << cluster->launcher_->stdout_text();
    return nullptr;
  }
  cluster->gateway_ =
      v1::Inference::NewStub(MakeChannel(cluster->address("gateway")));
  cluster->router_ =
      v1::RouterService::NewStub(MakeChannel(cluster->address("router")));
  return cluster;
}

LaunchedCluster::~LaunchedCluster() {
  if (launcher_ == nullptr) return;
  // Close this process's connections first: an idle connection whose
  // client polls nothing cannot acknowledge the servers' graceful GOAWAY,
  // which would hold up their drain.
  gateway_.reset();
  router_.reset();
  launcher_->Signal(SIGTERM);
  const std::optional<int> status = launcher_->Wait(60);
  if (!status.has_value()) {
    ADD_FAILURE() << "moe-cluster did not stop on SIGTERM";
    return;
  }
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
      << "moe-cluster exit status " << *status << "\nstderr:\n"
      << launcher_->StderrText();
}

std::string LaunchedCluster::metrics_url(const std::string& name) const {
  auto it = metrics_urls_.find(name);
  return it == metrics_urls_.end() ? "" : it->second;
}

std::string LaunchedCluster::openai_url(const std::string& name) const {
  auto it = openai_urls_.find(name);
  return it == openai_urls_.end() ? "" : it->second;
}

std::string LaunchedCluster::address(const std::string& name) const {
  auto it = addresses_.find(name);
  return it == addresses_.end() ? "" : it->second;
}

std::vector<std::string> LaunchedCluster::attention_names(
    const std::string& role) const {
  std::vector<std::string> names;
  for (const auto& [name, server_role] : roles_) {
    if (role.empty() || role == server_role) names.push_back(name);
  }
  return names;
}

pid_t LaunchedCluster::pid(const std::string& name) const {
  const std::string port_file = "/" + name + ".port";
  for (pid_t child : ChildPids(launcher_->pid())) {
    if (absl::StrContains(CommandLine(child), port_file)) return child;
  }
  return -1;
}

v1::AttentionLoad LaunchedCluster::AttentionLoad(const std::string& name) {
  auto stub = v1::AttentionService::NewStub(MakeChannel(address(name)));
  grpc::ClientContext context;
  v1::AttentionLoad load;
  const grpc::Status status =
      stub->GetLoad(&context, v1::GetLoadRequest(), &load);
  EXPECT_TRUE(status.ok()) << name << ": " << status.error_message();
  return load;
}

bool LaunchedCluster::WaitForIdleKv() {
  for (int i = 0; i < 3000; ++i) {
    bool idle = true;
    for (const std::string& name : attention_names()) {
      const v1::AttentionLoad load = AttentionLoad(name);
      idle = idle && load.kv_blocks_free() == load.kv_blocks_total() &&
             load.running() == 0 && load.waiting() == 0;
    }
    if (idle) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace moe::testing
