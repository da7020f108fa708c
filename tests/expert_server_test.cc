// The expert server in process on an ephemeral loopback port: RunExperts
// equals the core grouped FFN, and every malformed group is refused with
// INVALID_ARGUMENT naming the problem.
#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/checkpoint.h"
#include "core/expert_list.h"
#include "core/expert_ffn.h"
#include "core/model_weights.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/expert_server.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "gmock/gmock.h"
#include "moe/v1/expert.grpc.pb.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

class ExpertServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ExpertServerOptions options;
    options.engine.model_dir = testing::FixtureDir("tiny-mixtral");
    options.engine.experts = {{0, 1}, {0, 3}, {1, 5}};
    options.engine.num_threads = 2;
    absl::StatusOr<std::unique_ptr<ExpertServer>> server =
        ExpertServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::ExpertService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->port()),
        grpc::InsecureChannelCredentials()));

    absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt =
        Checkpoint::Open(testing::FixtureDir("tiny-mixtral"));
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    absl::StatusOr<ModelWeights> weights = LoadModelWeights(
        std::shared_ptr<Checkpoint>(*std::move(ckpt)), WeightSelection::Full());
    ASSERT_TRUE(weights.ok()) << weights.status();
    weights_ = *std::move(weights);
  }

  std::vector<float> RandomRows(int64_t rows, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist;
    std::vector<float> x(rows * hidden());
    for (float& v : x) v = dist(rng);
    return x;
  }

  std::vector<float> LocalFfn(int layer, int expert, const std::vector<float>& x) {
    const int64_t tokens = x.size() / hidden();
    std::vector<float> out(x.size());
    const FfnGroup group{&weights_.layers[layer].experts.at(expert), x.data(),
                         tokens, out.data()};
    GroupedFfnRunner().Run(absl::MakeConstSpan(&group, 1), nullptr);
    return out;
  }

  grpc::Status Call(const v1::RunExpertsRequest& request,
                    v1::RunExpertsResponse* response) {
    grpc::ClientContext context;
    return stub_->RunExperts(&context, request, response);
  }

  int64_t hidden() const { return weights_.config.hidden_size; }

  std::unique_ptr<ExpertServer> server_;
  std::unique_ptr<v1::ExpertService::Stub> stub_;
  ModelWeights weights_;
};

TEST_F(ExpertServerTest, ManyGroupsEqualTheCoreFfn) {
  const std::vector<std::pair<int, int>> ids = {{0, 1}, {1, 5}, {0, 3}, {0, 1}};
  const std::vector<int64_t> tokens = {1, 7, 16, 3};
  v1::RunExpertsRequest request;
  std::vector<std::vector<float>> inputs;
  for (size_t i = 0; i < ids.size(); ++i) {
    inputs.push_back(RandomRows(tokens[i], 100 + i));
    v1::ExpertGroup* g = request.add_groups();
    g->set_layer(ids[i].first);
    g->set_expert(ids[i].second);
    EncodeF32(inputs[i].data(), tokens[i], hidden(), g->mutable_hidden());
  }
  v1::RunExpertsResponse response;
  ASSERT_TRUE(Call(request, &response).ok());
  ASSERT_EQ(response.outputs_size(), static_cast<int>(ids.size()));
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StatusOr<F32Rows> got =
        DecodeF32Rows(response.outputs(i), hidden(), "output");
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->rows, tokens[i]);
    const std::vector<float> want = LocalFfn(ids[i].first, ids[i].second, inputs[i]);
    for (int64_t j = 0; j < tokens[i] * hidden(); ++j) {
      ASSERT_FLOAT_EQ(got->data[j], want[j]) << "group " << i << " element " << j;
    }
  }
}

TEST_F(ExpertServerTest, ReportsItsPlacement) {
  grpc::ClientContext context;
  v1::Placement placement;
  ASSERT_TRUE(stub_->GetPlacement(&context, v1::GetPlacementRequest(), &placement).ok());
  std::vector<std::pair<int, int>> got;
  for (const v1::ExpertId& id : placement.experts()) got.emplace_back(id.layer(), id.expert());
  EXPECT_THAT(got, ::testing::UnorderedElementsAre(std::make_pair(0, 1), std::make_pair(0, 3),
                                                   std::make_pair(1, 5)));
}


// Hot loading (LoadExperts / UnloadExperts): a loaded expert computes what
// the core FFN computes; an unloaded one is refused naming it; calls on the
// other experts keep succeeding while a load is in progress.
TEST_F(ExpertServerTest, LoadsAndUnloadsExpertsWhileServing) {
  auto run = [&](int layer, int expert, uint64_t seed,
                 v1::RunExpertsResponse* response, std::vector<float>* x) {
    *x = RandomRows(3, seed);
    v1::RunExpertsRequest request;
    v1::ExpertGroup* g = request.add_groups();
    g->set_layer(layer);
    g->set_expert(expert);
    EncodeF32(x->data(), 3, hidden(), g->mutable_hidden());
    return Call(request, response);
  };
  // Refused before the load: (1, 2) is not hosted.
  v1::RunExpertsResponse response;
  std::vector<float> x;
  grpc::Status before = run(1, 2, 11, &response, &x);
  ASSERT_EQ(before.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(before.error_message(), HasSubstr("not hosted"));

  // Calls to a hosted expert from another thread while the load runs.
  std::atomic<bool> stop{false};
  std::atomic<int> served{0}, failed{0};
  std::thread caller([&] {
    uint64_t seed = 1000;
    while (!stop.load()) {
      v1::RunExpertsResponse r;
      std::vector<float> in;
      if (run(0, 1, seed++, &r, &in).ok()) {
        ++served;
      } else {
        ++failed;
      }
    }
  });
  v1::ChangeExpertsRequest load;
  for (const auto& [layer, expert] : std::vector<std::pair<int, int>>{
           {1, 2}, {1, 5}, {0, 6}}) {
    v1::ExpertId* id = load.add_experts();
    id->set_layer(layer);
    id->set_expert(expert);
  }
  v1::ChangeExpertsResponse loaded;
  {
    grpc::ClientContext context;
    const grpc::Status status = stub_->LoadExperts(&context, load, &loaded);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  // Wait for at least one call after the load, then stop the caller.
  const int served_at_load = served.load();
  while (served.load() <= served_at_load + 1 && failed.load() == 0) {
    std::this_thread::yield();
  }
  stop.store(true);
  caller.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(loaded.changed(), 2);  // (1, 5) was hosted already
  EXPECT_EQ(loaded.hosted().experts_size(), 5);

  for (const auto& [layer, expert] : std::vector<std::pair<int, int>>{
           {1, 2}, {0, 6}, {1, 5}}) {
    ASSERT_TRUE(run(layer, expert, 20 + expert, &response, &x).ok());
    absl::StatusOr<F32Rows> got =
        DecodeF32Rows(response.outputs(0), hidden(), "output");
    ASSERT_TRUE(got.ok()) << got.status();
    const std::vector<float> want = LocalFfn(layer, expert, x);
    for (size_t j = 0; j < want.size(); ++j) {
      ASSERT_EQ(got->data[j], want[j]) << layer << ":" << expert << " " << j;
    }
  }

  v1::ChangeExpertsRequest unload;
  v1::ExpertId* id = unload.add_experts();
  id->set_layer(0);
  id->set_expert(1);
  v1::ChangeExpertsResponse unloaded;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->UnloadExperts(&context, unload, &unloaded).ok());
  }
  EXPECT_EQ(unloaded.changed(), 1);
  EXPECT_EQ(unloaded.hosted().experts_size(), 4);
  const grpc::Status after = run(0, 1, 30, &response, &x);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(after.error_message(), HasSubstr("layer 0 expert 1"));
  grpc::ClientContext context;
  v1::Placement placement;
  ASSERT_TRUE(
      stub_->GetPlacement(&context, v1::GetPlacementRequest(), &placement).ok());
  EXPECT_EQ(placement.experts_size(), 4);
}

TEST_F(ExpertServerTest, LoadingExpertsOutsideTheModelIsRefusedByName) {
  struct Case {
    int layer, expert;
    const char* message;
  };
  for (const Case& c : {Case{9, 0, "layer 9 is outside"},
                        Case{-1, 0, "layer -1 is outside"},
                        Case{0, 8, "expert 8 of layer 0 is outside"},
                        Case{1, -2, "expert -2 of layer 1"}}) {
    v1::ChangeExpertsRequest request;
    v1::ExpertId* id = request.add_experts();
    id->set_layer(c.layer);
    id->set_expert(c.expert);
    v1::ChangeExpertsResponse response;
    for (bool unload : {false, true}) {
      grpc::ClientContext context;
      const grpc::Status status =
          unload ? stub_->UnloadExperts(&context, request, &response)
                 : stub_->LoadExperts(&context, request, &response);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << c.message;
      EXPECT_THAT(status.error_message(), HasSubstr(c.message));
    }
  }
}

TEST_F(ExpertServerTest, RefusesBadGroupsNamingTheProblem) {
  const std::vector<float> x = RandomRows(2, 7);
  auto request_with = [&](auto mutate) {
    v1::RunExpertsRequest request;
    v1::ExpertGroup* ok = request.add_groups();
    ok->set_layer(0);
    ok->set_expert(1);
    EncodeF32(x.data(), 2, hidden(), ok->mutable_hidden());
    v1::ExpertGroup* bad = request.add_groups();
    bad->set_layer(0);
    bad->set_expert(3);
    EncodeF32(x.data(), 2, hidden(), bad->mutable_hidden());
    mutate(bad);
    return request;
  };
  struct Case {
    std::string name;
    std::function<void(v1::ExpertGroup*)> mutate;
    std::string needle;
    // A malformed group is the caller's fault; an expert this server does
    // not host is a placement the router must fix (it routes around it).
    grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT;
  };
  const std::vector<Case> cases = {
      {"expert not hosted", [](v1::ExpertGroup* g) { g->set_expert(2); },
       "groups[1].expert: layer 0 expert 2 is not hosted",
       grpc::StatusCode::FAILED_PRECONDITION},
      {"layer out of range", [](v1::ExpertGroup* g) { g->set_layer(9); },
       "groups[1].layer: 9 is outside the model's layers"},
      {"wrong dtype",
       [](v1::ExpertGroup* g) { g->mutable_hidden()->set_dtype(v1::DTYPE_F16); },
       "groups[1].hidden: dtype must be DTYPE_F32 or DTYPE_BF16, got DTYPE_F16"},
      {"BF16 with the bytes of F32",
       [](v1::ExpertGroup* g) { g->mutable_hidden()->set_dtype(v1::DTYPE_BF16); },
       "groups[1].hidden: holds 512 bytes but shape [2, 64] of BF16 needs 256"},
      {"wrong hidden size",
       [](v1::ExpertGroup* g) { g->mutable_hidden()->set_shape(1, 63); },
       "groups[1].hidden: shape must be [tokens, 64]"},
      {"three dims",
       [](v1::ExpertGroup* g) { g->mutable_hidden()->add_shape(1); },
       "groups[1].hidden: shape must be [tokens, 64]"},
      {"bytes disagree with shape",
       [](v1::ExpertGroup* g) { g->mutable_hidden()->mutable_data()->resize(100); },
       "groups[1].hidden: holds 100 bytes but shape [2, 64] of F32 needs 512"},
      {"negative tokens",
       [](v1::ExpertGroup* g) { g->mutable_hidden()->set_shape(0, -2); },
       "groups[1].hidden: shape must be [tokens, 64]"},
  };
  for (const Case& c : cases) {
    v1::RunExpertsResponse response;
    const grpc::Status status = Call(request_with(c.mutate), &response);
    EXPECT_EQ(status.error_code(), c.code) << c.name;
    EXPECT_THAT(status.error_message(), HasSubstr(c.needle)) << c.name;
  }
  // The server still serves a valid request afterwards.
  v1::RunExpertsResponse response;
  EXPECT_TRUE(Call(request_with([](v1::ExpertGroup*) {}), &response).ok());
  EXPECT_EQ(response.outputs_size(), 2);
}

TEST_F(ExpertServerTest, EmptyGroupsAndEmptyRequestsSucceed) {
  v1::RunExpertsRequest request;
  v1::RunExpertsResponse response;
  ASSERT_TRUE(Call(request, &response).ok());
  EXPECT_EQ(response.outputs_size(), 0);
  v1::ExpertGroup* g = request.add_groups();
  g->set_layer(1);
  g->set_expert(5);
  EncodeF32(nullptr, 0, hidden(), g->mutable_hidden());
  ASSERT_TRUE(Call(request, &response).ok());
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).shape(0), 0);
}

TEST(ExpertListTest, ParsesAndRejects) {
  absl::StatusOr<ExpertList> parsed = ParseExpertList("0:1, 2:3");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->all);
  EXPECT_EQ(parsed->experts, (std::set<std::pair<int, int>>{{0, 1}, {2, 3}}));
  absl::StatusOr<ExpertList> all = ParseExpertList("all");
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->all);
  absl::StatusOr<ExpertList> none = ParseExpertList(" none ");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->none);
  EXPECT_FALSE(none->all);
  EXPECT_TRUE(none->experts.empty());
  for (const char* bad : {"", "1", "a:b", "1:-2", "1:2:3", "1:3-2", "1:2-", "-1:2",
                          "1:0-2000000", ",,"}) {
    absl::StatusOr<ExpertList> r = ParseExpertList(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ExpertListTest, RangesParseAndFormatRoundTrips) {
  absl::StatusOr<ExpertList> parsed = ParseExpertList("0:0-3, 1:5,1:6-6,2:9");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->experts, (std::set<std::pair<int, int>>{
                                 {0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 5}, {1, 6}, {2, 9}}));
  EXPECT_EQ(FormatExpertList(parsed->experts), "0:0-3,1:5-6,2:9");
  const std::set<std::pair<int, int>> scattered = {{0, 1}, {0, 3}, {0, 4}, {3, 0}};
  EXPECT_EQ(FormatExpertList(scattered), "0:1,0:3-4,3:0");
  absl::StatusOr<ExpertList> back = ParseExpertList(FormatExpertList(scattered));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->experts, scattered);
}

// --experts=none: a server that starts hosting nothing, refuses every
// expert until it is given some, and serves what LoadExperts brings; an
// empty list without it is still refused, and a CUDA server cannot start
// empty (it cannot load later).
TEST(ExpertServerStartTest, StartsEmptyOnlyWhenAskedAndOnTheCpu) {
  ExpertServerOptions options;
  options.engine.model_dir = testing::FixtureDir("tiny-mixtral");
  absl::StatusOr<std::unique_ptr<ExpertServer>> refused =
      ExpertServer::Start(options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("--experts=none"));

  options.engine.start_empty = true;
  options.engine.device = DeviceSpec{DeviceSpec::Kind::kCuda, 0};
  absl::StatusOr<std::unique_ptr<ExpertServer>> cuda =
      ExpertServer::Start(options);
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(cuda.status().message()), HasSubstr("--device=cpu"));

  options.engine.device = DeviceSpec{};
  absl::StatusOr<std::unique_ptr<ExpertServer>> empty =
      ExpertServer::Start(options);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE((*empty)->engine().HostedExperts().empty());
  auto stub = v1::ExpertService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*empty)->port()),
      grpc::InsecureChannelCredentials()));
  v1::ChangeExpertsRequest load;
  v1::ExpertId* id = load.add_experts();
  id->set_layer(1);
  id->set_expert(2);
  v1::ChangeExpertsResponse loaded;
  grpc::ClientContext context;
  const grpc::Status status = stub->LoadExperts(&context, load, &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(loaded.changed(), 1);
  EXPECT_EQ((*empty)->engine().HostedExperts(),
            (std::vector<std::pair<int, int>>{{1, 2}}));
}

TEST(ExpertServerStartTest, PlacementOutsideTheModelIsRefusedAtLoad) {
  ExpertServerOptions options;
  options.engine.model_dir = testing::FixtureDir("tiny-mixtral");
  options.engine.experts = {{0, 8}};
  absl::StatusOr<std::unique_ptr<ExpertServer>> server = ExpertServer::Start(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("expert 8 of layer 0"));
}

}  // namespace
}  // namespace moe
