// Hierarchical rebalancing in process: a generated DeepSeek-V3-shaped model
// (8 experts in 4 groups, group-limited gating), four real expert servers
// forming two nodes, and a router with num_nodes = 2. A skewed workload
// is rebalanced; every expert group then sits, replicas included, on one
// node, the outputs stay bit-identical to the single-process engine's, and
// the response names the hierarchical policy. Layouts the nodes cannot
// express are refused at the router's start, naming the flag.
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/model_generator.h"
#include "core/model_weights.h"
#include "expert_server/expert_server.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "moe/v1/router.grpc.pb.h"
#include "router/router_server.h"
#include "tests/rebalance_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

constexpr int kServers = 4;
constexpr int kNodes = 2;
constexpr int kTokens = 12;

class RebalanceHierarchicalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GeneratorSpec spec{SmallConfig(ModelFamily::kDeepseekV3), DType::kBF16,
                       1, 23};
    ASSERT_TRUE(GenerateModel(dir_.path(), spec).ok());
    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
        Checkpoint::Open(dir_.path());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    absl::StatusOr<ModelWeights> weights = LoadModelWeights(
        std::shared_ptr<Checkpoint>(*std::move(ckpt)), WeightSelection::Full());
    ASSERT_TRUE(weights.ok()) << weights.status();
    weights_ = *std::move(weights);
    const ModelConfig& c = weights_.config;
    ASSERT_EQ(c.n_group, 4);
    ASSERT_EQ(c.num_experts, 8);
    // Expert e on server e % 4: each group {2g, 2g+1} starts split over
    // two servers, not always of one node.
    for (int s = 0; s < kServers; ++s) {
      ExpertServerOptions options;
      options.engine.model_dir = dir_.path();
      for (int l = 0; l < c.num_layers; ++l) {
        if (!c.IsMoeLayer(l)) continue;
        for (int e = s; e < c.num_experts; e += kServers) {
          options.engine.experts.emplace(l, e);
        }
      }
      options.engine.num_threads = 1;
      absl::StatusOr<std::unique_ptr<ExpertServer>> server =
          ExpertServer::Start(options);
      ASSERT_TRUE(server.ok()) << server.status();
      addresses_.push_back("127.0.0.1:" + std::to_string((*server)->port()));
      experts_.push_back(*std::move(server));
    }
    batch_ = std::make_unique<testing::SkewedMoeBatch>(weights_, kTokens, 9);
    ASSERT_TRUE(batch_->ok());
  }

  RouterServerOptions RouterOptions(int nodes) const {
    RouterServerOptions options;
    options.expert_addresses = addresses_;
    options.engine.model_dir = dir_.path();
    options.rebalance.num_nodes = nodes;
    return options;
  }

  // "" when RunMoe of the skewed batch on `layer` equals the engine's.
  std::string RunAndCompare(v1::RouterService::Stub& router, int layer) {
    return batch_->RunAndCompare(router, layer);
  }

  testing::TempDir dir_;
  ModelWeights weights_;
  std::vector<std::unique_ptr<ExpertServer>> experts_;
  std::vector<std::string> addresses_;
  std::unique_ptr<testing::SkewedMoeBatch> batch_;
};

TEST_F(RebalanceHierarchicalTest, EachExpertGroupEndsOnOneNode) {
  absl::StatusOr<std::unique_ptr<RouterServer>> router =
      RouterServer::Start(RouterOptions(kNodes));
  ASSERT_TRUE(router.ok()) << router.status();
  auto stub = v1::RouterService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*router)->port()),
      grpc::InsecureChannelCredentials()));
  const ModelConfig& c = weights_.config;
  for (int round = 0; round < 4; ++round) {
    for (int l = 0; l < c.num_layers; ++l) {
      if (!c.IsMoeLayer(l)) continue;
      ASSERT_EQ(RunAndCompare(*stub, l), "");
    }
  }
  v1::RebalanceResponse response;
  grpc::ClientContext context;
  v1::RebalanceRequest request;
  request.set_force(true);
  ASSERT_TRUE(stub->Rebalance(&context, request, &response).ok());
  ASSERT_TRUE(response.applied()) << response.reason();
  EXPECT_EQ(response.policy(), "hierarchical (2 nodes, 4 expert groups)");
  EXPECT_LT(response.imbalance_after(), response.imbalance_before());

  const int group_size = c.num_experts / c.n_group;
  const int servers_per_node = kServers / kNodes;
  const std::shared_ptr<const PlacementTable> placement =
      (*router)->engine().placement();
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.IsMoeLayer(l)) continue;
    std::vector<int> groups_on_node(kNodes, 0);
    for (int g = 0; g < c.n_group; ++g) {
      std::set<int> nodes;
      for (int e = g * group_size; e < (g + 1) * group_size; ++e) {
        for (int32_t s : placement->Replicas(l, e)) {
          nodes.insert(s / servers_per_node);
        }
      }
      ASSERT_EQ(nodes.size(), 1u) << "layer " << l << " group " << g;
      ++groups_on_node[*nodes.begin()];
    }
    EXPECT_EQ(groups_on_node, std::vector<int>(kNodes, c.n_group / kNodes))
        << "layer " << l;
  }
  // The servers host exactly the new placement, and outputs are unchanged.
  for (int s = 0; s < kServers; ++s) {
    EXPECT_EQ(testing::HostedBy(*experts_[s]), testing::PlacedOn(**router, s))
        << "server " << s;
  }
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.IsMoeLayer(l)) continue;
    EXPECT_EQ(RunAndCompare(*stub, l), "");
  }
}

TEST_F(RebalanceHierarchicalTest, NodesThatCannotHoldTheGroupsAreRefusedAtStart) {
  // 3 nodes divide neither the 4 servers nor the 4 groups.
  absl::StatusOr<std::unique_ptr<RouterServer>> three =
      RouterServer::Start(RouterOptions(3));
  ASSERT_FALSE(three.ok());
  EXPECT_THAT(three.status().message(), HasSubstr("--expert_server_nodes=3"));
  EXPECT_THAT(three.status().message(),
              HasSubstr("4 expert servers do not split evenly into 3 nodes"));
  // 4 nodes of one server each: the 4 groups split, one per node.
  absl::StatusOr<std::unique_ptr<RouterServer>> four =
      RouterServer::Start(RouterOptions(4));
  EXPECT_TRUE(four.ok()) << four.status();
}

}  // namespace
}  // namespace moe
