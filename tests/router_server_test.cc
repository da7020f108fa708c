// The router in process with real expert servers on ephemeral loopback
// ports: RunMoe equals the single-process engine's MoE step bit for bit, in
// several placements; capacity limits are deterministic and counted; bad
// requests are refused naming the field.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attention_server/direct_moe_executor.h"
#include "core/checkpoint.h"
#include "core/local_moe_executor.h"
#include "core/model_weights.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/expert_server.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "moe/v1/router.grpc.pb.h"
#include "router/router_server.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

// A whole MoE tier: expert servers with the given placements and a router.
class Tier {
 public:
  Tier(const std::string& fixture,
       const std::vector<std::set<std::pair<int, int>>>& placements,
       CapacityOptions capacity = {}) {
    RouterServerOptions router_options;
    for (const auto& experts : placements) {
      ExpertServerOptions options;
      options.engine.model_dir = testing::FixtureDir(fixture);
      options.engine.experts = experts;
      options.engine.num_threads = 1;
      absl::StatusOr<std::unique_ptr<ExpertServer>> server = ExpertServer::Start(options);
      EXPECT_TRUE(server.ok()) << server.status();
      if (!server.ok()) return;
      router_options.expert_addresses.push_back(
          "127.0.0.1:" + std::to_string((*server)->port()));
      experts_.push_back(*std::move(server));
    }
    router_options.engine.model_dir = testing::FixtureDir(fixture);
    router_options.engine.capacity = capacity;
    absl::StatusOr<std::unique_ptr<RouterServer>> router =
        RouterServer::Start(router_options);
    EXPECT_TRUE(router.ok()) << router.status();
    if (!router.ok()) return;
    router_ = *std::move(router);
    stub_ = v1::RouterService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(router_->port()),
        grpc::InsecureChannelCredentials()));
  }

  grpc::Status GetStats(v1::RouterStats* stats) {
    grpc::ClientContext context;
    return stub_->GetStats(&context, v1::GetRouterStatsRequest(), stats);
  }

  bool ok() const { return router_ != nullptr; }
  std::string address() const {
    return "127.0.0.1:" + std::to_string(router_->port());
  }
  RouterServer& router() { return *router_; }

  grpc::Status RunMoe(const v1::RunMoeRequest& request, v1::RunMoeResponse* response) {
    grpc::ClientContext context;
    return stub_->RunMoe(&context, request, response);
  }

 private:
  std::vector<std::unique_ptr<ExpertServer>> experts_;
  std::unique_ptr<RouterServer> router_;
  std::unique_ptr<v1::RouterService::Stub> stub_;
};

std::set<std::pair<int, int>> ExpertsWhere(int layers, int experts,
                                           const std::function<bool(int, int)>& keep) {
  std::set<std::pair<int, int>> out;
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) {
      if (keep(l, e)) out.emplace(l, e);
    }
  }
  return out;
}

std::vector<float> RandomRows(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> x(rows * cols);
  for (float& v : x) v = dist(rng);
  return x;
}

struct Topology {
  std::string name;
  std::vector<std::set<std::pair<int, int>>> placements;
};

class RouterEqualsEngineTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RouterEqualsEngineTest, EveryPlacementMatchesTheLocalMoeStep) {
  const std::string fixture = GetParam();
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(testing::FixtureDir(fixture));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<ModelWeights> weights =
      LoadModelWeights(std::shared_ptr<Checkpoint>(*std::move(ckpt)), WeightSelection::Full());
  ASSERT_TRUE(weights.ok()) << weights.status();
  const ModelConfig& c = weights->config;
  const int L = c.num_layers, E = c.num_experts;
  auto moe_layer = [&](int l) { return c.IsMoeLayer(l); };
  const std::vector<Topology> topologies = {
      {"one server", {ExpertsWhere(L, E, [&](int l, int) { return moe_layer(l); })}},
      {"four slices",
       {ExpertsWhere(L, E, [&](int l, int e) { return moe_layer(l) && e % 4 == 0; }),
        ExpertsWhere(L, E, [&](int l, int e) { return moe_layer(l) && e % 4 == 1; }),
        ExpertsWhere(L, E, [&](int l, int e) { return moe_layer(l) && e % 4 == 2; }),
        ExpertsWhere(L, E, [&](int l, int e) { return moe_layer(l) && e % 4 == 3; })}},
      {"every expert twice",
       {ExpertsWhere(L, E, [&](int l, int) { return moe_layer(l); }),
        ExpertsWhere(L, E, [&](int l, int) { return moe_layer(l); })}},
  };
  ThreadPool pool(2);
  LocalMoeExecutor local(&*weights, &pool);
  for (const Topology& topology : topologies) {
    Tier tier(fixture, topology.placements);
    ASSERT_TRUE(tier.ok()) << topology.name;
    for (int layer = 0; layer < L; ++layer) {
      if (!c.IsMoeLayer(layer)) continue;
      for (int64_t tokens : {1, 5, 33}) {
        const std::vector<float> x = RandomRows(tokens, c.hidden_size, 31 * layer + tokens);
        std::vector<float> want(x.size());
        ASSERT_TRUE(local.RunMoe(layer, x.data(), tokens, want.data()).ok());
        v1::RunMoeRequest request;
        request.set_layer(layer);
        EncodeF32(x.data(), tokens, c.hidden_size, request.mutable_hidden());
        v1::RunMoeResponse response;
        const grpc::Status status = tier.RunMoe(request, &response);
        ASSERT_TRUE(status.ok()) << topology.name << ": " << status.error_message();
        absl::StatusOr<F32Rows> got = DecodeF32Rows(response.output(), c.hidden_size, "output");
        ASSERT_TRUE(got.ok()) << got.status();
        ASSERT_EQ(got->rows, tokens);
        for (size_t i = 0; i < want.size(); ++i) {
          ASSERT_EQ(got->data[i], want[i])
              << topology.name << " layer " << layer << " tokens " << tokens << " i " << i;
        }
        EXPECT_EQ(response.dropped_slots(), 0);
        EXPECT_EQ(response.rerouted_slots(), 0);
      }
    }
  }
}

// An attention server's direct dispatch (DirectMoeExecutor) takes the
// router's placement and capacity policy from GetDispatchConfig and computes
// the router's answer bit for bit, without the router in the path, also
// when capacity limits reroute and drop slots.
TEST(DirectDispatchTest, EqualsTheRoutersAnswerBitForBit) {
  const std::string fixture = "tiny-mixtral";
  absl::StatusOr<ModelConfig> c = LoadModelConfig(testing::FixtureDir(fixture));
  ASSERT_TRUE(c.ok()) << c.status();
  const int L = c->num_layers, E = c->num_experts;
  const std::vector<std::set<std::pair<int, int>>> placements = {
      ExpertsWhere(L, E, [&](int l, int e) { return c->IsMoeLayer(l) && e % 2 == 0; }),
      ExpertsWhere(L, E, [&](int l, int e) { return c->IsMoeLayer(l) && e % 3 != 0; }),
      ExpertsWhere(L, E, [&](int l, int e) { return c->IsMoeLayer(l) && e % 6 == 3; })};
  for (const auto policy : {CapacityOptions::OverflowPolicy::kReroute,
                            CapacityOptions::OverflowPolicy::kDrop}) {
    CapacityOptions capacity;
    capacity.capacity_factor = 0.5;
    capacity.policy = policy;
    Tier tier(fixture, placements, capacity);
    ASSERT_TRUE(tier.ok());
    auto registry = std::make_shared<prometheus::Registry>();
    DirectMoeOptions options;
    options.router_address = tier.address();
    options.model_dir = testing::FixtureDir(fixture);
    absl::StatusOr<std::unique_ptr<DirectMoeExecutor>> direct =
        DirectMoeExecutor::Create(options, *registry);
    ASSERT_TRUE(direct.ok()) << direct.status();
    EXPECT_EQ((*direct)->placement()->num_entries(),
              tier.router().engine().placement()->num_entries());
    int64_t moved = 0;
    for (int layer = 0; layer < L; ++layer) {
      if (!c->IsMoeLayer(layer)) continue;
      for (int64_t tokens : {1, 7, 40}) {
        const std::vector<float> x =
            RandomRows(tokens, c->hidden_size, 97 * layer + tokens);
        v1::RunMoeRequest request;
        request.set_layer(layer);
        EncodeF32(x.data(), tokens, c->hidden_size, request.mutable_hidden());
        v1::RunMoeResponse response;
        const grpc::Status status = tier.RunMoe(request, &response);
        ASSERT_TRUE(status.ok()) << status.error_message();
        moved += response.rerouted_slots() + response.dropped_slots();
        absl::StatusOr<F32Rows> want =
            DecodeF32Rows(response.output(), c->hidden_size, "output");
        ASSERT_TRUE(want.ok()) << want.status();
        std::vector<float> got(x.size());
        const absl::Status run = (*direct)->RunMoe(layer, x.data(), tokens, got.data());
        ASSERT_TRUE(run.ok()) << run;
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_EQ(got[i], want->data[i])
              << "layer " << layer << " tokens " << tokens << " i " << i;
        }
      }
    }
    EXPECT_GT(moved, 0) << "the capacity limit never moved a slot";
  }
}

// The BF16 wire (attention_server --wire_dtype bf16): a BF16 hidden state
// comes back as a BF16 output of half the bytes, close to the F32 answer
// (each hop rounds to 8 significant bits), and direct dispatch with the same
// wire computes the router's BF16 answer bit for bit.
TEST(WireDtypeTest, Bf16AnswersInBf16CloseToF32AndDirectDispatchAgrees) {
  const std::string fixture = "tiny-mixtral";
  absl::StatusOr<ModelConfig> c = LoadModelConfig(testing::FixtureDir(fixture));
  ASSERT_TRUE(c.ok()) << c.status();
  const int L = c->num_layers, E = c->num_experts;
  const std::vector<std::set<std::pair<int, int>>> placements = {
      ExpertsWhere(L, E, [&](int l, int e) { return c->IsMoeLayer(l) && e % 2 == 0; }),
      ExpertsWhere(L, E, [&](int l, int e) { return c->IsMoeLayer(l) && e % 2 == 1; })};
  Tier tier(fixture, placements);
  ASSERT_TRUE(tier.ok());
  auto registry = std::make_shared<prometheus::Registry>();
  DirectMoeOptions options;
  options.router_address = tier.address();
  options.model_dir = testing::FixtureDir(fixture);
  options.wire_dtype = v1::DTYPE_BF16;
  absl::StatusOr<std::unique_ptr<DirectMoeExecutor>> direct =
      DirectMoeExecutor::Create(options, *registry);
  ASSERT_TRUE(direct.ok()) << direct.status();
  const int64_t hidden = c->hidden_size;
  double worst_relative = 0;
  for (int layer = 0; layer < L; ++layer) {
    if (!c->IsMoeLayer(layer)) continue;
    for (int64_t tokens : {1, 9}) {
      const std::vector<float> x = RandomRows(tokens, hidden, 13 * layer + tokens);
      v1::RunMoeRequest request;
      request.set_layer(layer);
      EncodeRows(x.data(), tokens, hidden, v1::DTYPE_F32, request.mutable_hidden());
      v1::RunMoeResponse f32;
      ASSERT_TRUE(tier.RunMoe(request, &f32).ok());
      EncodeRows(x.data(), tokens, hidden, v1::DTYPE_BF16, request.mutable_hidden());
      v1::RunMoeResponse bf16;
      const grpc::Status status = tier.RunMoe(request, &bf16);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(bf16.output().dtype(), v1::DTYPE_BF16);
      EXPECT_EQ(bf16.output().data().size(),
                static_cast<size_t>(tokens * hidden * 2));
      absl::StatusOr<F32Rows> want = DecodeF32Rows(f32.output(), hidden, "f32");
      absl::StatusOr<F32Rows> got = DecodeF32Rows(bf16.output(), hidden, "bf16");
      ASSERT_TRUE(want.ok() && got.ok());
      for (int64_t t = 0; t < tokens; ++t) {
        double norm = 0, diff = 0;
        for (int64_t i = t * hidden; i < (t + 1) * hidden; ++i) {
          norm = std::max(norm, std::abs(double{want->data[i]}));
          diff = std::max(diff, std::abs(double{got->data[i]} - want->data[i]));
        }
        // Three roundings of about 2^-9 relative each (input, expert
        // output, combined output): a few percent of the row's scale at
        // most. A token whose gate flips between near-equal experts would
        // exceed it; these random rows have none.
        EXPECT_LE(diff, 0.03 * norm) << "layer " << layer << " token " << t;
        if (norm > 0) worst_relative = std::max(worst_relative, diff / norm);
      }
      std::vector<float> direct_out(x.size());
      ASSERT_TRUE((*direct)->RunMoe(layer, x.data(), tokens, direct_out.data()).ok());
      for (size_t i = 0; i < direct_out.size(); ++i) {
        ASSERT_EQ(direct_out[i], got->data[i]) << "layer " << layer << " i " << i;
      }
    }
  }
  RecordProperty("worst_relative_difference", std::to_string(worst_relative));
  std::printf("[wire] bf16 against f32: worst max-abs difference %.4f of the "
              "row's largest value\n", worst_relative);
  EXPECT_GT(worst_relative, 0) << "BF16 rounding changed nothing: not sent as BF16?";
}

// Started against something that is not a router, direct dispatch fails
// naming the router and the RPC.
TEST(DirectDispatchTest, AnUnreachableRouterIsNamed) {
  auto registry = std::make_shared<prometheus::Registry>();
  DirectMoeOptions options;
  options.router_address = "127.0.0.1:1";
  options.model_dir = testing::FixtureDir("tiny-mixtral");
  options.connect_timeout_seconds = 0.5;
  absl::StatusOr<std::unique_ptr<DirectMoeExecutor>> direct =
      DirectMoeExecutor::Create(options, *registry);
  ASSERT_FALSE(direct.ok());
  EXPECT_EQ(direct.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(direct.status().message(), HasSubstr("router 127.0.0.1:1"));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RouterEqualsEngineTest,
                         ::testing::Values("tiny-mixtral", "tiny-qwen2-moe"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name) if (ch == '-') ch = '_';
                           return name;
                         });

TEST(RouterCapacityTest, OverflowIsDeterministicAndCountedLikeThePlan) {
  for (auto policy : {CapacityOptions::OverflowPolicy::kDrop,
                      CapacityOptions::OverflowPolicy::kReroute}) {
    CapacityOptions capacity;
    capacity.capacity_factor = 0.5;
    capacity.policy = policy;
    Tier tier("tiny-mixtral", {ExpertsWhere(2, 8, [](int, int) { return true; })}, capacity);
    ASSERT_TRUE(tier.ok());
    const int64_t tokens = 24;
    const std::vector<float> x = RandomRows(tokens, 64, 5);
    v1::RunMoeRequest request;
    request.set_layer(1);
    EncodeF32(x.data(), tokens, 64, request.mutable_hidden());
    v1::RunMoeResponse first, second;
    ASSERT_TRUE(tier.RunMoe(request, &first).ok());
    ASSERT_TRUE(tier.RunMoe(request, &second).ok());
    EXPECT_EQ(first.output().data(), second.output().data());
    EXPECT_EQ(first.dropped_slots(), second.dropped_slots());
    // capacity = ceil(0.5 * 24 * 2 / 8) = 3 slots per expert, 24 of 48 fit.
    if (policy == CapacityOptions::OverflowPolicy::kDrop) {
      EXPECT_GT(first.dropped_slots(), 0);
      EXPECT_EQ(first.rerouted_slots(), 0);
    } else {
      EXPECT_GT(first.rerouted_slots(), 0);
    }
    // The router's cumulative counters explain every slot.
    const RouterTotals totals = tier.router().engine().Totals();
    const LayerDispatchStats& layer = totals.layers[1];
    EXPECT_EQ(layer.slots, 2 * tokens * 2);
    EXPECT_EQ(layer.dropped(), 2 * first.dropped_slots());
    EXPECT_EQ(layer.rerouted(), 2 * first.rerouted_slots());
    int64_t computed = 0;
    for (const ExpertDispatchStats& e : layer.experts) {
      computed += e.tokens;
      EXPECT_LE(e.tokens, 2 * 3);
    }
    EXPECT_EQ(computed + layer.dropped(), layer.slots);

    // GetStats reports the same counts over RPC.
    v1::RouterStats stats;
    ASSERT_TRUE(tier.GetStats(&stats).ok());
    EXPECT_EQ(stats.batches(), 2);
    ASSERT_EQ(stats.layers_size(), 2);  // both layers of tiny-mixtral are MoE
    const v1::LayerDispatchCounts& counts = stats.layers(1);
    EXPECT_EQ(counts.layer(), 1);
    EXPECT_EQ(counts.slots(), layer.slots);
    ASSERT_EQ(counts.experts_size(), 8);
    int64_t rerouted = 0, dropped = 0;
    for (int e = 0; e < 8; ++e) {
      EXPECT_EQ(counts.experts(e).tokens(), layer.experts[e].tokens);
      EXPECT_EQ(counts.experts(e).overflowed(),
                counts.experts(e).rerouted() + counts.experts(e).dropped());
      rerouted += counts.experts(e).rerouted();
      dropped += counts.experts(e).dropped();
    }
    EXPECT_EQ(rerouted, layer.rerouted());
    EXPECT_EQ(dropped, layer.dropped());
    ASSERT_EQ(stats.servers_size(), 1);
    EXPECT_EQ(stats.servers(0).slots(), computed);
    EXPECT_EQ(stats.servers(0).calls(), 2);
  }
}

TEST(RouterRequestTest, BadRequestsNameTheField) {
  Tier tier("tiny-mixtral", {ExpertsWhere(2, 8, [](int, int) { return true; })});
  ASSERT_TRUE(tier.ok());
  const std::vector<float> x = RandomRows(2, 64, 9);
  struct Case {
    int layer;
    std::function<void(v1::Tensor*)> mutate;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {5, [](v1::Tensor*) {}, "layer: 5 is not a MoE layer"},
      {-1, [](v1::Tensor*) {}, "layer: -1 is not a MoE layer"},
      {0, [](v1::Tensor* t) { t->set_dtype(v1::DTYPE_F16); }, "hidden: dtype must be DTYPE_F32"},
      {0, [](v1::Tensor* t) { t->set_shape(1, 32); }, "hidden: shape must be [tokens, 64]"},
      {0, [](v1::Tensor* t) { t->mutable_data()->pop_back(); }, "hidden: holds 511 bytes"},
  };
  for (const Case& c : cases) {
    v1::RunMoeRequest request;
    request.set_layer(c.layer);
    EncodeF32(x.data(), 2, 64, request.mutable_hidden());
    c.mutate(request.mutable_hidden());
    v1::RunMoeResponse response;
    const grpc::Status status = tier.RunMoe(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.needle;
    EXPECT_THAT(status.error_message(), HasSubstr(c.needle));
  }
  v1::RunMoeRequest request;
  request.set_layer(0);
  EncodeF32(x.data(), 2, 64, request.mutable_hidden());
  v1::RunMoeResponse response;
  EXPECT_TRUE(tier.RunMoe(request, &response).ok());
}

TEST(RouterFailureTest, AStoppedExpertServerFailsTheStepNamingIt) {
  ExpertServerOptions options;
  options.engine.model_dir = testing::FixtureDir("tiny-mixtral");
  options.engine.all_experts = true;
  absl::StatusOr<std::unique_ptr<ExpertServer>> expert = ExpertServer::Start(options);
  ASSERT_TRUE(expert.ok()) << expert.status();
  const std::string address = "127.0.0.1:" + std::to_string((*expert)->port());
  RouterServerOptions router_options;
  router_options.engine.model_dir = testing::FixtureDir("tiny-mixtral");
  router_options.expert_addresses = {address};
  absl::StatusOr<std::unique_ptr<RouterServer>> router = RouterServer::Start(router_options);
  ASSERT_TRUE(router.ok()) << router.status();
  auto stub = v1::RouterService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*router)->port()), grpc::InsecureChannelCredentials()));
  const std::vector<float> x = RandomRows(3, 64, 4);
  v1::RunMoeRequest request;
  request.set_layer(0);
  EncodeF32(x.data(), 3, 64, request.mutable_hidden());
  {
    grpc::ClientContext context;
    v1::RunMoeResponse response;
    ASSERT_TRUE(stub->RunMoe(&context, request, &response).ok());
  }
  expert->reset();  // the expert server goes away
  grpc::ClientContext context;
  v1::RunMoeResponse response;
  const grpc::Status status = stub->RunMoe(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr(address));
  EXPECT_THAT(status.error_message(), HasSubstr("layer 0"));
}

TEST(RouterStartTest, AnExpertWithoutReplicaIsRefusedNamingIt) {
  ExpertServerOptions options;
  options.engine.model_dir = testing::FixtureDir("tiny-mixtral");
  options.engine.experts = ExpertsWhere(2, 8, [](int l, int e) { return !(l == 1 && e == 6); });
  absl::StatusOr<std::unique_ptr<ExpertServer>> expert = ExpertServer::Start(options);
  ASSERT_TRUE(expert.ok()) << expert.status();
  RouterServerOptions router_options;
  router_options.engine.model_dir = testing::FixtureDir("tiny-mixtral");
  router_options.expert_addresses = {"127.0.0.1:" + std::to_string((*expert)->port())};
  absl::StatusOr<std::unique_ptr<RouterServer>> router = RouterServer::Start(router_options);
  ASSERT_FALSE(router.ok());
  EXPECT_THAT(std::string(router.status().message()), HasSubstr("layer 1"));
  EXPECT_THAT(std::string(router.status().message()), HasSubstr("expert 6"));
}

}  // namespace
}  // namespace moe
