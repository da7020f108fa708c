// The NCCL data plane where no GPU is needed (tests/gpu/cuda_nccl_test.cc
// has the exchanges themselves): what each kind of build and machine
// answers (unique ids, joins, the router and expert server refusing
// --data_plane=nccl with the reason), the expert service's checks of NCCL
// requests, the router's link protocol and its fall back to gRPC bytes
// (with a fake communicator standing in for NCCL), and the topology fields.
#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/backends.h"
#include "core/model_config.h"
#include "core/nccl_data_plane.h"
#include "core/rpc/call_stream_reactor.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/server_util.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/expert_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/v1/expert.grpc.pb.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "router/expert_connection.h"
#include "router/nccl_expert_link.h"
#include "router/placement_table.h"
#include "router/router_metrics.h"
#include "tests/process_util.h"
#include "tests/test_util.h"
#include "tests/topology_test_util.h"
#include "tools/moe_cluster/server_args.h"
#include "tools/moe_cluster/topology.h"

namespace moe {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

using Answer = absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>>;

constexpr char kFixture[] = "tiny-mixtral";

int64_t FixtureHidden() {
  absl::StatusOr<ModelConfig> config =
      LoadModelConfig(testing::FixtureDir(kFixture));
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? config->hidden_size : 0;
}

// Whether this machine and build could really join a communicator.
bool NcclUsableHere() {
  return CheckNcclUsable(DeviceSpec{DeviceSpec::Kind::kCuda, 0}).ok();
}

// ---------------------------------------------------------------------------
// What the build and the machine answer.

TEST(NcclDataPlaneTest, UniqueIdsMatchTheBuild) {
  // NCCL is only ever built together with the CUDA backend.
  if (NcclBuilt()) {
    EXPECT_TRUE(ProbeGpus().backend_built);
  }
  absl::StatusOr<std::string> a = NewNcclUniqueId();
  if (!NcclBuilt()) {
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(a.status().message()),
                HasSubstr("this build has no NCCL"));
    return;
  }
  // ncclGetUniqueId needs no GPU: it only opens the bootstrap socket.
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->size(), kNcclUniqueIdBytes);
  absl::StatusOr<std::string> b = NewNcclUniqueId();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE(*a, *b) << "two communicators got the same id";
}

TEST(NcclDataPlaneTest, NcclNeedsACudaDevice) {
  const absl::Status cpu = CheckNcclUsable(DeviceSpec());
  EXPECT_EQ(cpu.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(cpu.message()),
              NcclBuilt() ? HasSubstr("needs a CUDA device (cuda:N), got cpu")
                          : HasSubstr("this build has no NCCL"));
  NcclJoinOptions options;
  options.unique_id = std::string(kNcclUniqueIdBytes, '\0');
  options.device = DeviceSpec();
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> joined =
      JoinNcclCommunicator(options);
  ASSERT_FALSE(joined.ok());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(NcclDataPlaneTest, JoiningWithoutAGpuFailsClearly) {
  if (!ProbeGpus().devices.empty()) {
    GTEST_SKIP() << "this machine has a CUDA GPU; the GPU tests "
                    "(tests/gpu/cuda_nccl_test.cc) cover joining";
  }
  NcclJoinOptions options;
  absl::StatusOr<std::string> id = NewNcclUniqueId();
  options.unique_id = id.ok() ? *id : std::string(kNcclUniqueIdBytes, '\0');
  options.rank = 0;
  options.nranks = 2;
  options.device = DeviceSpec{DeviceSpec::Kind::kCuda, 0};
  // Long: a join that waited for its peer would take all of it.
  options.timeout = absl::Seconds(240);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> joined =
      JoinNcclCommunicator(options);
  ASSERT_FALSE(joined.ok());
  // Refused before waiting for any peer.
  EXPECT_LT(absl::Now() - start, options.timeout / 2);
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(joined.status().message());
  if (NcclBuilt()) {
    EXPECT_THAT(message, HasSubstr("no CUDA device is usable"));
  } else {
    EXPECT_THAT(message, HasSubstr("this build has no NCCL"));
  }
}

TEST(NcclDataPlaneTest, MalformedJoinsAreRefusedBeforeWaiting) {
  if (!NcclUsableHere()) {
    GTEST_SKIP() << "needs NCCL and a CUDA GPU: "
                 << CheckNcclUsable(DeviceSpec{DeviceSpec::Kind::kCuda, 0});
  }
  NcclJoinOptions options;
  options.device = DeviceSpec{DeviceSpec::Kind::kCuda, 0};
  options.unique_id = "short";
  EXPECT_EQ(JoinNcclCommunicator(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.unique_id = std::string(kNcclUniqueIdBytes, '\0');
  options.rank = 2;
  EXPECT_EQ(JoinNcclCommunicator(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NcclDataPlaneTest, DataPlaneNamesParse) {
  EXPECT_EQ(*ParseDataPlane("grpc"), DataPlane::kGrpc);
  EXPECT_EQ(*ParseDataPlane("nccl"), DataPlane::kNccl);
  EXPECT_STREQ(DataPlaneName(DataPlane::kNccl), "nccl");
  absl::StatusOr<DataPlane> bad = ParseDataPlane("rdma");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("\"rdma\" is not one of grpc, nccl"));
}

// ---------------------------------------------------------------------------
// The binaries refuse --data_plane=nccl where it cannot work.

std::string Bin(const std::string& name) {
  return std::string(MOE_BIN_DIR) + "/" + name;
}

TEST(DataPlaneBinariesTest, RouterRefusesNcclWithoutAGpuOrNccl) {
  if (NcclUsableHere()) {
    GTEST_SKIP() << "NCCL and a GPU are usable here: the router would start";
  }
  // Port 1 has no expert server: the router must refuse before it looks.
  const testing::ProcessResult r = testing::RunProcess(
      {Bin("router"), "--model=" + testing::FixtureDir(kFixture),
       "--expert_servers=127.0.0.1:1", "--listen=127.0.0.1:0",
       "--data_plane=nccl"},
      {}, 60);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("router: --data_plane=nccl: "));
  EXPECT_THAT(r.err, NcclBuilt() ? HasSubstr("no CUDA device is usable")
                                 : HasSubstr("this build has no NCCL"));
  EXPECT_THAT(r.err, Not(HasSubstr("Segmentation")));
}

TEST(DataPlaneBinariesTest, BadDataPlaneFlagsAreRefused) {
  testing::ProcessResult r = testing::RunProcess(
      {Bin("router"), "--model=" + testing::FixtureDir(kFixture),
       "--expert_servers=127.0.0.1:1", "--data_plane=rdma"},
      {}, 60);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--data_plane: data plane \"rdma\" is not one "
                               "of grpc, nccl"));
  r = testing::RunProcess(
      {Bin("router"), "--model=" + testing::FixtureDir(kFixture),
       "--expert_servers=127.0.0.1:1", "--data_plane=nccl", "--device=gpu0"},
      {}, 60);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--device: device \"gpu0\" is not one of"));
  r = testing::RunProcess(
      {Bin("expert_server"), "--model=" + testing::FixtureDir(kFixture),
       "--experts=all", "--data_plane=nccl", "--listen=127.0.0.1:0"},
      {}, 60);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("expert_server: --data_plane=nccl needs "
                               "--device=cuda:N"));
  r = testing::RunProcess(
      {Bin("expert_server"), "--model=" + testing::FixtureDir(kFixture),
       "--experts=all", "--data_plane=tcp"},
      {}, 60);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, HasSubstr("--data_plane: data plane \"tcp\""));
}

// ---------------------------------------------------------------------------
// The expert service's side, on a CPU expert server.

class ExpertDataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ExpertServerOptions options;
    options.engine.model_dir = testing::FixtureDir(kFixture);
    options.engine.experts = {{0, 1}, {0, 3}, {1, 5}};
    options.engine.num_threads = 1;
    absl::StatusOr<std::unique_ptr<ExpertServer>> server =
        ExpertServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    stub_ = v1::ExpertService::NewStub(MakeChannel(address_));
    hidden_ = server_->engine().config().hidden_size;
  }

  // An NCCL request for groups of (layer, expert, tokens).
  v1::RunExpertsRequest NcclRequest(
      const std::vector<std::tuple<int, int, int>>& groups) {
    v1::RunExpertsRequest request;
    for (const auto& [layer, expert, tokens] : groups) {
      v1::ExpertGroup* g = request.add_groups();
      g->set_layer(layer);
      g->set_expert(expert);
      g->mutable_hidden()->set_dtype(v1::DTYPE_F32);
      g->mutable_hidden()->add_shape(tokens);
      g->mutable_hidden()->add_shape(hidden_);
    }
    request.mutable_nccl()->set_link(7);
    request.mutable_nccl()->set_sequence(1);
    request.mutable_nccl()->set_timeout_ms(1000);
    return request;
  }

  std::unique_ptr<ExpertServer> server_;
  std::string address_;
  std::unique_ptr<v1::ExpertService::Stub> stub_;
  int64_t hidden_ = 0;
};

TEST_F(ExpertDataPlaneTest, JoinIsRefusedWithoutTheNcclDataPlane) {
  v1::JoinDataPlaneRequest request;
  request.set_nccl_unique_id(std::string(kNcclUniqueIdBytes, '\0'));
  request.set_nranks(2);
  request.set_rank(1);
  request.set_link(7);
  request.set_timeout_seconds(5);
  v1::JoinDataPlaneResponse response;
  grpc::ClientContext context;
  const grpc::Status status =
      stub_->JoinDataPlane(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(),
              HasSubstr("started with --data_plane=grpc"));
}

TEST_F(ExpertDataPlaneTest, StartingWithNcclOnTheCpuFails) {
  ExpertServerOptions options;
  options.engine.model_dir = testing::FixtureDir(kFixture);
  options.engine.experts = {{0, 1}};
  options.data_plane = DataPlane::kNccl;
  absl::StatusOr<std::unique_ptr<ExpertServer>> server =
      ExpertServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(server.status().message()),
              HasSubstr("--data_plane=nccl: "));
}

TEST_F(ExpertDataPlaneTest, NcclRequestsWithoutALinkAreRefused) {
  v1::RunExpertsRequest request = NcclRequest({{0, 1, 3}});
  v1::RunExpertsResponse response;
  grpc::ClientContext context;
  const grpc::Status status = stub_->RunExperts(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(),
              HasSubstr("nccl.link: this expert server has no NCCL data plane "
                        "link 7"));
}

TEST_F(ExpertDataPlaneTest, NcclGroupsAreCheckedLikeAnyOther) {
  const ExpertEngine& engine = server_->engine();
  absl::StatusOr<std::vector<ExpertWork>> work =
      DecodeNcclExpertRequest(NcclRequest({{0, 1, 3}, {1, 5, 0}}), engine);
  ASSERT_TRUE(work.ok()) << work.status();
  ASSERT_EQ(work->size(), 2u);
  EXPECT_EQ((*work)[0].tokens, 3);
  EXPECT_EQ((*work)[0].x, nullptr);
  EXPECT_EQ((*work)[1].expert, 5);

  // Malformed groups are INVALID_ARGUMENT; an expert the server does not
  // host is FAILED_PRECONDITION (the router routes around the server).
  auto error = [&](const v1::RunExpertsRequest& request,
                   absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
    absl::StatusOr<std::vector<ExpertWork>> w =
        DecodeNcclExpertRequest(request, engine);
    EXPECT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), code);
    return std::string(w.status().message());
  };
  v1::RunExpertsRequest bytes = NcclRequest({{0, 1, 1}});
  bytes.mutable_groups(0)->mutable_hidden()->set_data(
      std::string(hidden_ * 4, '\0'));
  EXPECT_THAT(error(bytes), HasSubstr("groups[0].hidden: carries"));
  v1::RunExpertsRequest wide = NcclRequest({{0, 1, 1}});
  wide.mutable_groups(0)->mutable_hidden()->set_shape(1, hidden_ + 1);
  EXPECT_THAT(error(wide), HasSubstr("groups[0].hidden: shape must be"));
  v1::RunExpertsRequest negative = NcclRequest({{0, 1, -1}});
  EXPECT_THAT(error(negative), HasSubstr("tokens >= 0"));
  v1::RunExpertsRequest bf16 = NcclRequest({{0, 1, 1}});
  bf16.mutable_groups(0)->mutable_hidden()->set_dtype(v1::DTYPE_BF16);
  EXPECT_THAT(error(bf16), HasSubstr("dtype must be F32"));
  EXPECT_THAT(error(NcclRequest({{0, 1, 1}, {0, 2, 1}}),
                    absl::StatusCode::kFailedPrecondition),
              HasSubstr("groups[1].expert: layer 0 expert 2 is not hosted"));
}

// ---------------------------------------------------------------------------
// The router's link, with a fake communicator in place of NCCL.

// Stands in for rank 0 of a two-rank communicator: Exchange runs
// `exchange`, which plays both the transfer and the server's computation.
class FakeCommunicator final : public NcclCommunicator {
 public:
  using ExchangeFn =
      std::function<absl::Status(absl::Span<const absl::Span<const float>>,
                                 absl::Span<const absl::Span<float>>,
                                 absl::Time, const std::function<bool()>&)>;
  explicit FakeCommunicator(ExchangeFn exchange)
      : exchange_(std::move(exchange)) {}

  int rank() const override { return 0; }
  int nranks() const override { return 2; }
  const DeviceSpec& device() const override { return device_; }
  bool aborted() const override { return aborted_; }
  absl::Status Exchange(int peer,
                        absl::Span<const absl::Span<const float>> inputs,
                        absl::Span<const absl::Span<float>> outputs,
                        absl::Time deadline,
                        const std::function<bool()>& cancelled) override {
    EXPECT_EQ(peer, 1);
    if (aborted_) return absl::UnavailableError("aborted earlier");
    absl::Status status = exchange_(inputs, outputs, deadline, cancelled);
    if (!status.ok()) aborted_ = true;
    return status;
  }
  absl::Status ServeExperts(int, ExpertFfnBackend&, absl::Span<const FfnGroup>,
                            absl::Time, const std::function<bool()>&) override {
    // The fake stands in for the router's side of a link only.
    return absl::UnimplementedError("the fake communicator plays the router side only");
  }

 private:
  ExchangeFn exchange_;
  DeviceSpec device_{DeviceSpec::Kind::kCuda, 0};
  bool aborted_ = false;
};

// Doubles every value, as the fake "expert" of these tests.
absl::Status DoubleRows(absl::Span<const absl::Span<const float>> inputs,
                        absl::Span<const absl::Span<float>> outputs) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    for (size_t j = 0; j < inputs[i].size(); ++j) {
      outputs[i][j] = 2 * inputs[i][j];
    }
  }
  return absl::OkStatus();
}

// An ExpertService whose "experts" double their rows: over gRPC it answers
// with the doubled bytes; for NCCL control messages it answers shapes only
// (the fake communicator doubles the rows). Records every request.
class DoublingExpertService final : public v1::ExpertService::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::RunExpertsRequest, v1::RunExpertsResponse>*
  ExpertStream(grpc::CallbackServerContext*) override {
    using Reactor =
        CallStreamReactor<v1::RunExpertsRequest, v1::RunExpertsResponse>;
    return Reactor::Start([this](std::unique_ptr<v1::RunExpertsRequest> request,
                                 Reactor::Reply reply) {
      auto response = std::make_unique<v1::RunExpertsResponse>();
      response->set_call_id(request->call_id());
      for (const v1::ExpertGroup& g : request->groups()) {
        v1::Tensor* out = response->add_outputs();
        out->set_dtype(v1::DTYPE_F32);
        *out->mutable_shape() = g.hidden().shape();
        if (request->has_nccl()) continue;
        std::string data = g.hidden().data();
        float* v = reinterpret_cast<float*>(data.data());
        for (size_t i = 0; i < data.size() / 4; ++i) v[i] *= 2;
        out->set_data(std::move(data));
      }
      {
        absl::MutexLock lock(&mu_);
        requests_.push_back(*request);
      }
      reply(std::move(response));
    });
  }

  std::vector<v1::RunExpertsRequest> requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::RunExpertsRequest> requests_ ABSL_GUARDED_BY(mu_);
};

// A request of groups with `rows[g]` tokens each, values distinct per group
// and row so that misplaced rows show.
std::unique_ptr<v1::RunExpertsRequest> RowsRequest(
    const std::vector<std::pair<int, int>>& experts,
    const std::vector<int>& rows, int64_t hidden) {
  auto request = std::make_unique<v1::RunExpertsRequest>();
  for (size_t g = 0; g < experts.size(); ++g) {
    std::vector<float> x(rows[g] * hidden);
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = static_cast<float>(g + 1) * 0.01f + static_cast<float>(i) * 1e-4f;
    }
    v1::ExpertGroup* group = request->add_groups();
    group->set_layer(experts[g].first);
    group->set_expert(experts[g].second);
    EncodeF32(x.data(), rows[g], hidden, group->mutable_hidden());
  }
  return request;
}

// `seconds`: the call's deadline, against hangs only unless a test says.
Answer CallAndWait(ExpertConnection& connection,
                   std::unique_ptr<v1::RunExpertsRequest> request,
                   double seconds = 120) {
  absl::Notification done;
  Answer answer = absl::UnknownError("no answer");
  connection.Call(
      std::move(request),
      std::chrono::system_clock::now() +
          std::chrono::milliseconds(static_cast<int>(seconds * 1000)),
      [&](Answer a) {
        answer = std::move(a);
        done.Notify();
      });
  done.WaitForNotification();
  return answer;
}

std::vector<float> Floats(const v1::Tensor& t) {
  const float* v = reinterpret_cast<const float*>(t.data().data());
  return std::vector<float>(v, v + t.data().size() / 4);
}

class NcclExpertLinkTest : public ::testing::Test {
 protected:
  void StartDoublingServer() {
    absl::StatusOr<StartedServer> started =
        StartGrpcServer("fake expert server", "127.0.0.1:0", {&service_});
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(started->server);
    address_ = absl::StrCat("127.0.0.1:", started->port);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  DoublingExpertService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  static constexpr int64_t kHidden = 8;
};

TEST_F(NcclExpertLinkTest, RowsTravelOverTheLinkAndCallsOverTheStream) {
  StartDoublingServer();
  std::atomic<int> exchanges{0};
  auto communicator = std::make_unique<FakeCommunicator>(
      [&](auto inputs, auto outputs, absl::Time deadline, const auto&) {
        ++exchanges;
        EXPECT_GT(deadline, absl::Now());
        return DoubleRows(inputs, outputs);
      });
  ExpertConnection connection(address_);
  std::atomic<int> broken{0};
  connection.AttachDataPlane(
      std::make_unique<NcclExpertLink>(std::move(communicator), 42,
                                       "expert server 0", kHidden),
      [&](const absl::Status&) { ++broken; });
  ASSERT_TRUE(connection.nccl_active());

  for (int call = 0; call < 3; ++call) {
    std::unique_ptr<v1::RunExpertsRequest> request =
        RowsRequest({{0, 1}, {1, 2}, {0, 3}}, {3, 0, 2}, kHidden);
    const v1::RunExpertsRequest sent = *request;
    Answer answer = CallAndWait(connection, std::move(request));
    ASSERT_TRUE(answer.ok()) << answer.status();
    ASSERT_EQ((*answer)->outputs_size(), 3);
    for (int g = 0; g < 3; ++g) {
      std::vector<float> expected = Floats(sent.groups(g).hidden());
      for (float& v : expected) v *= 2;
      EXPECT_EQ(Floats((*answer)->outputs(g)), expected) << "group " << g;
      EXPECT_EQ((*answer)->outputs(g).dtype(), v1::DTYPE_F32);
    }
  }
  EXPECT_EQ(exchanges.load(), 3);
  EXPECT_EQ(broken.load(), 0);
  // The stream carried control messages only: shapes, no rows, the link and
  // consecutive sequence numbers.
  const std::vector<v1::RunExpertsRequest> seen = service_.requests();
  ASSERT_EQ(seen.size(), 3u);
  for (size_t i = 0; i < seen.size(); ++i) {
    ASSERT_TRUE(seen[i].has_nccl());
    EXPECT_EQ(seen[i].nccl().link(), 42u);
    EXPECT_EQ(seen[i].nccl().sequence(), i + 1);
    EXPECT_GT(seen[i].nccl().timeout_ms(), 0);
    ASSERT_EQ(seen[i].groups_size(), 3);
    EXPECT_EQ(seen[i].groups(1).expert(), 2);
    for (const v1::ExpertGroup& g : seen[i].groups()) {
      EXPECT_TRUE(g.hidden().data().empty());
      EXPECT_EQ(g.hidden().dtype(), v1::DTYPE_F32);
      EXPECT_EQ(g.hidden().shape(1), kHidden);
    }
    EXPECT_EQ(seen[i].groups(0).hidden().shape(0), 3);
  }
}

TEST_F(NcclExpertLinkTest, ABrokenLinkFailsItsCallThenFallsBackToGrpcBytes) {
  StartDoublingServer();
  std::atomic<int> exchanges{0};
  auto communicator = std::make_unique<FakeCommunicator>(
      [&](auto, auto, absl::Time, const auto&) {
        ++exchanges;
        return absl::UnavailableError("NCCL link aborted: ncclRemoteError");
      });
  ExpertConnection connection(address_);
  std::vector<std::string> reasons;
  connection.AttachDataPlane(
      std::make_unique<NcclExpertLink>(std::move(communicator), 42,
                                       "expert server 3 (x:1)", kHidden),
      [&](const absl::Status& why) {
        reasons.push_back(std::string(why.message()));
      });

  Answer failed = CallAndWait(connection, RowsRequest({{0, 1}}, {2}, kHidden));
  ASSERT_FALSE(failed.ok());
  // UNAVAILABLE: the dispatcher treats it as a server failure (replicas).
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(failed.status().message()),
              AllOf(HasSubstr("NCCL data plane to expert server 3 (x:1) "
                              "failed"),
                    HasSubstr("ncclRemoteError"),
                    HasSubstr("its calls go over gRPC from now on")));
  EXPECT_FALSE(connection.nccl_active());
  ASSERT_EQ(reasons.size(), 1u);

  // Later calls carry their rows over gRPC and are computed as before.
  for (int call = 0; call < 2; ++call) {
    std::unique_ptr<v1::RunExpertsRequest> request =
        RowsRequest({{0, 1}, {0, 2}}, {2, 1}, kHidden);
    const v1::RunExpertsRequest sent = *request;
    Answer answer = CallAndWait(connection, std::move(request));
    ASSERT_TRUE(answer.ok()) << answer.status();
    std::vector<float> expected = Floats(sent.groups(1).hidden());
    for (float& v : expected) v *= 2;
    EXPECT_EQ(Floats((*answer)->outputs(1)), expected);
  }
  EXPECT_EQ(exchanges.load(), 1);
  EXPECT_EQ(reasons.size(), 1u);  // reported once
  const std::vector<v1::RunExpertsRequest> seen = service_.requests();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_TRUE(seen[0].has_nccl());
  EXPECT_FALSE(seen[1].has_nccl());
  EXPECT_FALSE(seen[1].groups(0).hidden().data().empty());
}

TEST_F(NcclExpertLinkTest, AServerWithoutTheLinkBreaksItPromptly) {
  // A real (CPU) expert server, which never joined link 42: it refuses the
  // control message, and the exchange waiting for it gives up at once
  // rather than at the deadline.
  ExpertServerOptions options;
  options.engine.model_dir = testing::FixtureDir(kFixture);
  options.engine.experts = {{0, 1}, {0, 3}};
  options.engine.num_threads = 1;
  absl::StatusOr<std::unique_ptr<ExpertServer>> server =
      ExpertServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*server)->port());
  const int64_t hidden = FixtureHidden();

  auto communicator = std::make_unique<FakeCommunicator>(
      [](auto, auto, absl::Time deadline, const auto& cancelled) {
        // As NCCL would: the send waits for a receive that never comes.
        while (!cancelled()) {
          if (absl::Now() > deadline) {
            return absl::UnavailableError("deadline passed");
          }
          absl::SleepFor(absl::Milliseconds(1));
        }
        return absl::UnavailableError("NCCL link aborted: cancelled");
      });
  ExpertConnection connection(address);
  std::atomic<int> broken{0};
  connection.AttachDataPlane(
      std::make_unique<NcclExpertLink>(std::move(communicator), 42,
                                       "expert server 0", hidden),
      [&](const absl::Status&) { ++broken; });
  // A long deadline: waiting for it would take all of it.
  constexpr double kDeadlineSeconds = 240;
  const absl::Time start = absl::Now();
  Answer failed =
      CallAndWait(connection, RowsRequest({{0, 1}, {0, 3}}, {2, 3}, hidden),
                  kDeadlineSeconds);
  EXPECT_LT(absl::Now() - start, absl::Seconds(kDeadlineSeconds / 2));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(failed.status().message()),
              HasSubstr("no NCCL data plane link 42"));
  EXPECT_EQ(broken.load(), 1);

  // Over gRPC now: the same answer as a connection that never had a link.
  ExpertConnection plain(address);
  for (int call = 0; call < 2; ++call) {
    Answer via_fallback =
        CallAndWait(connection, RowsRequest({{0, 1}, {0, 3}}, {2, 3}, hidden));
    Answer via_grpc =
        CallAndWait(plain, RowsRequest({{0, 1}, {0, 3}}, {2, 3}, hidden));
    ASSERT_TRUE(via_fallback.ok()) << via_fallback.status();
    ASSERT_TRUE(via_grpc.ok()) << via_grpc.status();
    ASSERT_EQ((*via_fallback)->outputs_size(), 2);
    for (int g = 0; g < 2; ++g) {
      EXPECT_EQ((*via_fallback)->outputs(g).data(),
                (*via_grpc)->outputs(g).data());
      EXPECT_FALSE((*via_fallback)->outputs(g).data().empty());
    }
  }
}

TEST_F(NcclExpertLinkTest, JoiningFailsNamingTheServerAndTheReason) {
  // A CPU expert server started with --data_plane=grpc.
  ExpertServerOptions options;
  options.engine.model_dir = testing::FixtureDir(kFixture);
  options.engine.experts = {{0, 1}};
  options.engine.num_threads = 1;
  absl::StatusOr<std::unique_ptr<ExpertServer>> server =
      ExpertServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*server)->port());
  auto stub = v1::ExpertService::NewStub(MakeChannel(address));
  absl::StatusOr<std::unique_ptr<NcclExpertLink>> link = NcclExpertLink::Join(
      *stub, "expert server 0 (" + address + ")",
      DeviceSpec{DeviceSpec::Kind::kCuda, 0}, FixtureHidden(), 10);
  ASSERT_FALSE(link.ok());
  EXPECT_EQ(link.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(link.status().message());
  if (NcclUsableHere()) {
    // This side could join; the server refuses.
    EXPECT_THAT(message, AllOf(HasSubstr("expert server 0 (" + address),
                               HasSubstr("started with --data_plane=grpc")));
  } else {
    // This side cannot: refused before calling the server.
    EXPECT_THAT(message, NcclBuilt() ? HasSubstr("no CUDA device is usable")
                                     : HasSubstr("this build has no NCCL"));
  }
}

TEST(DataPlaneMetricsTest, FallbacksAreCountedPerServer) {
  prometheus::Registry registry;
  ModelConfig config;
  config.family = ModelFamily::kMixtral;
  config.num_layers = 1;
  config.num_experts = 2;
  config.num_experts_per_tok = 1;
  absl::StatusOr<PlacementTable> placement = AutoPlacement(config, 2, 1);
  ASSERT_TRUE(placement.ok()) << placement.status();
  RouterMetrics metrics(registry, config, *placement, {"a:1", "b:2"},
                        /*per_expert=*/true);
  std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_THAT(
      text,
      HasSubstr("moe_router_data_plane_fallbacks_total{server=\"b:2\"} 0\n"));
  metrics.RecordDataPlaneFallback(1);
  metrics.RecordDataPlaneFallback(7);  // out of range: ignored
  text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_THAT(
      text,
      HasSubstr("moe_router_data_plane_fallbacks_total{server=\"b:2\"} 1\n"));
  EXPECT_THAT(
      text,
      HasSubstr("moe_router_data_plane_fallbacks_total{server=\"a:1\"} 0\n"));
}

// ---------------------------------------------------------------------------
// Topology: devices and the data plane.

namespace cluster_test {

using ::moe::cluster::ClusterPlan;
using ::moe::cluster::ParseTopology;
using ::moe::cluster::PlanLaunches;
using ::moe::cluster::ServerLaunch;
using ::moe::cluster::Stage;
using ::moe::cluster::Topology;
using ::moe::cluster::testing::Error;
using ::moe::cluster::testing::ParseAndResolve;
using ::moe::cluster::testing::With;

std::vector<std::string> ArgsOf(const std::vector<ServerLaunch>& launches,
                                const std::string& name) {
  for (const ServerLaunch& l : launches) {
    if (l.name == name) return l.args;
  }
  ADD_FAILURE() << "no server " << name;
  return {};
}

TEST(DataPlaneTopologyTest, DevicesAndTheNcclDataPlaneBecomeFlags) {
  absl::StatusOr<ClusterPlan> plan = ParseAndResolve(With(R"("expert_servers": [
                {"experts": "0:0-7", "device": "cuda:1"},
                {"experts": "1:0-7"}],
              "expert_device": "cuda",
              "data_plane": {"kind": "nccl", "router_device": "cuda:2"},
              "attention_servers": 1)"),
                                                     "tiny-mixtral");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->data_plane.kind, DataPlane::kNccl);
  EXPECT_EQ(plan->data_plane.router_device, "cuda:2");
  const std::vector<ServerLaunch> launches = PlanLaunches(*plan, "/m");
  EXPECT_THAT(ArgsOf(launches, "expert-0"),
              ElementsAre("--model=/m", "--experts=0:0-7", "--device=cuda:1",
                          "--data_plane=nccl"));
  // expert_device is the default; "cuda" means cuda:0.
  EXPECT_THAT(ArgsOf(launches, "expert-1"),
              ElementsAre("--model=/m", "--experts=1:0-7", "--device=cuda:0",
                          "--data_plane=nccl"));
  EXPECT_THAT(
      ArgsOf(launches, "router"),
      ElementsAre("--model=/m", "--data_plane=nccl", "--device=cuda:2"));
  EXPECT_THAT(ArgsOf(launches, "attention-0"),
              Not(Contains("--data_plane=nccl")));
  EXPECT_THAT(ArgsOf(launches, "gateway"), ElementsAre("--model=/m"));

  // The count form: expert_device for every server; router_device defaults
  // to cuda:0.
  plan = ParseAndResolve(With(R"("expert_servers": 2, "expert_device": "cuda:1",
              "data_plane": {"kind": "nccl"}, "attention_servers": 1)"),
                         "tiny-qwen2-moe");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->data_plane.router_device, "cuda:0");
  EXPECT_THAT(ArgsOf(PlanLaunches(*plan, "/m"), "expert-1"),
              Contains("--device=cuda:1"));
  EXPECT_THAT(ArgsOf(PlanLaunches(*plan, "/m"), "router"),
              Contains("--device=cuda:0"));

  // Devices without the NCCL data plane: only --device; kind grpc is the
  // default and adds nothing.
  plan = ParseAndResolve(With(R"("expert_servers": 1, "expert_device": "cuda:3",
              "data_plane": {"kind": "grpc"}, "attention_servers": 1)"),
                         "tiny-mixtral");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->data_plane.kind, DataPlane::kGrpc);
  EXPECT_THAT(
      ArgsOf(PlanLaunches(*plan, "/m"), "expert-0"),
      ElementsAre("--model=/m", "--experts=0:0-7,1:0-7", "--device=cuda:3"));
  EXPECT_THAT(ArgsOf(PlanLaunches(*plan, "/m"), "router"),
              ElementsAre("--model=/m"));
}

TEST(DataPlaneTopologyTest, TheExampleFileUsesTwoGpus) {
  absl::StatusOr<Topology> t = cluster::LoadTopology(
      std::string(MOE_SOURCE_DIR) + "/deploy/local/gpu-nccl.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->data_plane.kind, DataPlane::kNccl);
  EXPECT_EQ(t->data_plane.router_device, "cuda:0");
  for (const auto& server : t->expert_servers) {
    EXPECT_EQ(server.device, "cuda:1");
  }
}

TEST(DataPlaneTopologyTest, MistakesAreNamedByTheirPath) {
  const std::string two = R"("attention_servers": 1, "expert_servers": 2)";
  EXPECT_THAT(Error(With(two + R"(, "expert_device": "gpu")")),
              HasSubstr("expert_device: must be \"cpu\", \"cuda\" or "
                        "\"cuda:N\", got \"gpu\""));
  EXPECT_THAT(Error(With(two + R"(, "expert_device": 1)")),
              HasSubstr("expert_device: must be a string"));
  EXPECT_THAT(Error(With(R"("attention_servers": 1, "expert_servers": [
                {"experts": "all", "device": "cuda:-1"}])")),
              HasSubstr("expert_servers[0].device: must be \"cpu\""));
  EXPECT_THAT(Error(With(two + R"(, "data_plane": "nccl")")),
              HasSubstr("data_plane: must be an object"));
  EXPECT_THAT(Error(With(two + R"(, "data_plane": {})")),
              HasSubstr("data_plane.kind: required (\"grpc\" or \"nccl\")"));
  EXPECT_THAT(Error(With(two + R"(, "data_plane": {"kind": "rdma"})")),
              HasSubstr("data_plane.kind: must be one of \"grpc\", \"nccl\""));
  EXPECT_THAT(Error(With(two + R"(, "data_plane": {"kind": "nccl",
                                  "device": "cuda:0"})")),
              HasSubstr("data_plane.device: unknown key"));
  EXPECT_THAT(Error(With(two + R"(, "data_plane": {"kind": "grpc",
                                  "router_device": "cuda:0"})")),
              HasSubstr("data_plane.router_device: only applies to kind "
                        "\"nccl\""));
  EXPECT_THAT(Error(With(two + R"(, "expert_device": "cuda:1",
                     "data_plane": {"kind": "nccl", "router_device": "cpu"})")),
              HasSubstr("data_plane.router_device: must be a CUDA device"));
  // Every expert server needs a GPU, and not the router's.
  EXPECT_THAT(Error(With(two + R"(, "data_plane": {"kind": "nccl"})")),
              HasSubstr("expert_device: the nccl data plane needs every "
                        "expert server on a CUDA device (\"cuda:N\"), but "
                        "expert server expert-0 has none"));
  EXPECT_THAT(Error(With(R"("attention_servers": 1, "expert_servers": [
                {"experts": "0:0-7", "device": "cuda:1"},
                {"experts": "1:0-7", "device": "cpu"}],
                "data_plane": {"kind": "nccl"})")),
              HasSubstr("expert_servers[1].device: the nccl data plane needs "
                        "every expert server on a CUDA device (\"cuda:N\"), "
                        "but expert server expert-1 has \"cpu\""));
  EXPECT_THAT(Error(With(R"("attention_servers": 1, "expert_servers": [
                {"experts": "0:0-7", "device": "cuda:1"},
                {"experts": "1:0-7"}],
                "data_plane": {"kind": "nccl"})")),
              HasSubstr("expert_servers[1].device: the nccl data plane"));
  EXPECT_THAT(Error(With(two + R"(, "expert_device": "cuda",
                     "data_plane": {"kind": "nccl"})")),
              HasSubstr("data_plane.router_device: cuda:0 is also the device "
                        "of expert server expert-0 (expert_device); NCCL "
                        "needs the router and each expert server on "
                        "different GPUs"));
}

}  // namespace cluster_test

}  // namespace
}  // namespace moe
