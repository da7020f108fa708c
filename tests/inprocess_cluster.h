// A whole cluster in one test process: expert servers with the given
// placements, a router, attention servers (role both) and a gateway, each a
// real gRPC server on an ephemeral 127.0.0.1 port.
#ifndef MOE_TESTS_INPROCESS_CLUSTER_H_
#define MOE_TESTS_INPROCESS_CLUSTER_H_

#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "attention_server/attention_server.h"
#include "expert_server/expert_server.h"
#include "gateway/gateway_server.h"
#include "grpcpp/support/status.h"
#include "moe/v1/attention.grpc.pb.h"
#include "moe/v1/generate.grpc.pb.h"
#include "moe/v1/router.grpc.pb.h"
#include "router/router_server.h"
#include "tests/generate_client.h"

namespace moe::testing {

struct InProcessClusterOptions {
  std::string model_dir;
  // One entry per expert server: the (layer, expert) pairs it hosts.
  std::vector<std::set<std::pair<int, int>>> placements;
  CapacityOptions capacity;
  int attention_servers = 1;
  AttentionEngineOptions attention;  // model_dir is filled in
};

class InProcessCluster {
 public:
  static absl::StatusOr<std::unique_ptr<InProcessCluster>> Start(
      const InProcessClusterOptions& options);

  std::string gateway_address() const;
  v1::Inference::Stub& gateway() { return *gateway_stub_; }
  v1::AttentionService::Stub& attention(int i) { return *attention_stubs_[i]; }
  v1::RouterService::Stub& router() { return *router_stub_; }
  AttentionServer& attention_server(int i) { return *attention_[i]; }

 private:
  std::vector<std::unique_ptr<ExpertServer>> experts_;
  std::unique_ptr<RouterServer> router_;
  std::vector<std::unique_ptr<AttentionServer>> attention_;
  std::unique_ptr<GatewayServer> gateway_;
  std::unique_ptr<v1::Inference::Stub> gateway_stub_;
  std::vector<std::unique_ptr<v1::AttentionService::Stub>> attention_stubs_;
  std::unique_ptr<v1::RouterService::Stub> router_stub_;
};

// Every expert of every MoE layer of the model at `model_dir` for which
// keep(layer, expert) holds.
std::set<std::pair<int, int>> ExpertsWhere(
    const std::string& model_dir, const std::function<bool(int, int)>& keep);

}  // namespace moe::testing

#endif  // MOE_TESTS_INPROCESS_CLUSTER_H_
