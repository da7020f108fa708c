#include "tests/inprocess_cluster.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "core/rpc/channel_util.h"
#include "core/status_macros.h"

namespace moe::testing {
namespace {

std::string Loopback(int port) { return absl::StrCat("127.0.0.1:", port); }

}  // namespace

absl::StatusOr<std::unique_ptr<InProcessCluster>> InProcessCluster::Start(
    const InProcessClusterOptions& options) {
  auto cluster = std::make_unique<InProcessCluster>();
  RouterServerOptions router_options;
  for (const auto& experts : options.placements) {
    ExpertServerOptions expert_options;
    expert_options.engine.model_dir = options.model_dir;
    expert_options.engine.experts = experts;
    expert_options.engine.num_threads = 1;
    ASSIGN_OR_RETURN(std::unique_ptr<ExpertServer> expert,
                     ExpertServer::Start(expert_options));
    router_options.expert_addresses.push_back(Loopback(expert->port()));
    cluster->experts_.push_back(std::move(expert));
  }
  router_options.engine.model_dir = options.model_dir;
  router_options.engine.capacity = options.capacity;
  ASSIGN_OR_RETURN(cluster->router_, RouterServer::Start(router_options));
  const std::string router_address = Loopback(cluster->router_->port());
  cluster->router_stub_ =
      v1::RouterService::NewStub(MakeChannel(router_address));

  GatewayServerOptions gateway_options;
  gateway_options.model_dir = options.model_dir;
  for (int i = 0; i < options.attention_servers; ++i) {
    AttentionServerOptions attention_options;
    attention_options.router_address = router_address;
    attention_options.engine = options.attention;
    attention_options.engine.model_dir = options.model_dir;
    ASSIGN_OR_RETURN(std::unique_ptr<AttentionServer> attention,
                     AttentionServer::Start(attention_options));
    const std::string address = Loopback(attention->port());
    gateway_options.attention_addresses.push_back(address);
    cluster->attention_stubs_.push_back(
        v1::AttentionService::NewStub(MakeChannel(address)));
    cluster->attention_.push_back(std::move(attention));
  }
  ASSIGN_OR_RETURN(cluster->gateway_, GatewayServer::Start(gateway_options));
  cluster->gateway_stub_ =
      v1::Inference::NewStub(MakeChannel(cluster->gateway_address()));
  return cluster;
}

std::string InProcessCluster::gateway_address() const {
  return Loopback(gateway_->port());
}

std::set<std::pair<int, int>> ExpertsWhere(
    const std::string& model_dir, const std::function<bool(int, int)>& keep) {
  std::set<std::pair<int, int>> out;
  absl::StatusOr<ModelConfig> config = LoadModelConfig(model_dir);
  if (!config.ok()) return out;
  for (int l = 0; l < config->num_layers; ++l) {
    if (!config->IsMoeLayer(l)) continue;
    for (int e = 0; e < config->num_experts; ++e) {
      if (keep(l, e)) out.emplace(l, e);
    }
  }
  return out;
}

}  // namespace moe::testing
