// The same-host transport end to end in one process: an ExpertConnection
// with shared memory attaches to a real expert server and gets the same
// bytes as over the gRPC stream; what does not fit, finds every slot busy,
// misses its deadline or outlives the server falls back or fails as the
// stream would; and the server refuses bad segments and bad slot contents
// with errors that name them.
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/rpc/call_stream_reactor.h"
#include "core/rpc/server_util.h"
#include "core/rpc/shm_segment.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/expert_server.h"
#include "expert_server/shm_expert_channel.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "router/expert_connection.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using Answer = absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>>;

// Long enough never to end a wait that an event is meant to end.
constexpr absl::Duration kSettle = absl::Seconds(60);

std::unique_ptr<v1::RunExpertsRequest> RowsRequest(
    const std::vector<std::pair<int, int>>& experts,
    const std::vector<int>& rows, int64_t hidden,
    v1::DType dtype = v1::DTYPE_F32) {
  auto request = std::make_unique<v1::RunExpertsRequest>();
  for (size_t g = 0; g < experts.size(); ++g) {
    std::vector<float> x(rows[g] * hidden);
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = static_cast<float>(g + 1) * 0.25f - static_cast<float>(i % 97) * 0.01f;
    }
    v1::ExpertGroup* group = request->add_groups();
    group->set_layer(experts[g].first);
    group->set_expert(experts[g].second);
    EncodeRows(x.data(), rows[g], hidden, dtype, group->mutable_hidden());
  }
  return request;
}

// Sends and returns a handle to wait on.
struct PendingCall {
  absl::Notification done;
  Answer answer = absl::UnknownError("no answer");
};

std::shared_ptr<PendingCall> Send(ExpertConnection& connection,
                                  std::unique_ptr<v1::RunExpertsRequest> request,
                                  absl::Duration deadline = absl::Seconds(120)) {
  auto call = std::make_shared<PendingCall>();
  connection.Call(std::move(request),
                  std::chrono::system_clock::now() +
                      absl::ToChronoMicroseconds(deadline),
                  [call](Answer answer) {
                    call->answer = std::move(answer);
                    call->done.Notify();
                  });
  return call;
}

Answer CallAndWait(ExpertConnection& connection,
                   std::unique_ptr<v1::RunExpertsRequest> request) {
  std::shared_ptr<PendingCall> call = Send(connection, std::move(request));
  call->done.WaitForNotification();
  return std::move(call->answer);
}

ShmLinkOptions SharedMemory(int slots = 4, uint64_t slot_bytes = 1 << 20) {
  ShmLinkOptions options;
  options.enabled = true;
  options.slots = slots;
  options.slot_bytes = slot_bytes;
  return options;
}

class ShmTransportTest : public ::testing::Test {
 protected:
  void StartServer(bool shared_memory) {
    ExpertServerOptions options;
    options.engine.model_dir = testing::FixtureDir("tiny-mixtral");
    options.engine.experts = {{0, 1}, {0, 3}, {1, 5}};
    options.engine.num_threads = 2;
    options.shared_memory = shared_memory;
    absl::StatusOr<std::unique_ptr<ExpertServer>> server =
        ExpertServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    hidden_ = server_->engine().config().hidden_size;
  }

  std::unique_ptr<ExpertServer> server_;
  std::string address_;
  int64_t hidden_ = 0;
};

TEST_F(ShmTransportTest, CallsOverSharedMemoryEqualTheStreamsAnswers) {
  StartServer(/*shared_memory=*/true);
  ExpertConnection shm(address_, SharedMemory());
  ExpertConnection stream(address_);
  ASSERT_TRUE(shm.WaitForSharedMemory(kSettle).ok());
  EXPECT_EQ(shm.transport(), "shared memory");
  EXPECT_EQ(stream.transport(), "grpc stream");
  EXPECT_TRUE(absl::IsFailedPrecondition(stream.WaitForSharedMemory(kSettle)));

  int calls = 0;
  for (v1::DType dtype : {v1::DTYPE_F32, v1::DTYPE_BF16}) {
    for (const std::vector<int>& rows :
         std::vector<std::vector<int>>{{1, 0, 0}, {3, 5, 2}, {16, 1, 7}}) {
      auto make = [&] {
        return RowsRequest({{0, 1}, {0, 3}, {1, 5}}, rows, hidden_, dtype);
      };
      Answer over_shm = CallAndWait(shm, make());
      Answer over_stream = CallAndWait(stream, make());
      ++calls;
      ASSERT_TRUE(over_shm.ok()) << over_shm.status();
      ASSERT_TRUE(over_stream.ok()) << over_stream.status();
      ASSERT_EQ((*over_shm)->outputs_size(), 3);
      for (int g = 0; g < 3; ++g) {
        EXPECT_EQ((*over_shm)->outputs(g).SerializeAsString(),
                  (*over_stream)->outputs(g).SerializeAsString())
            << "group " << g << " dtype " << dtype;
        EXPECT_EQ((*over_shm)->outputs(g).dtype(), dtype);
      }
      EXPECT_GT((*over_shm)->compute_seconds(), 0);
    }
  }
  EXPECT_EQ(shm.shared_memory_calls(), calls);
  EXPECT_EQ(shm.stream_calls(), 0);
  EXPECT_EQ(stream.shared_memory_calls(), 0);
}

TEST_F(ShmTransportTest, TheServersErrorsComeBackAsOverTheStream) {
  StartServer(/*shared_memory=*/true);
  ExpertConnection shm(address_, SharedMemory());
  ASSERT_TRUE(shm.WaitForSharedMemory(kSettle).ok());
  // Expert 2 of layer 0 is not hosted here.
  Answer refused = CallAndWait(shm, RowsRequest({{0, 2}}, {2}, hidden_));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(refused.status()))
      << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("groups[0]"));
  EXPECT_THAT(refused.status().message(), HasSubstr("not hosted"));
  // The link goes on.
  Answer fine = CallAndWait(shm, RowsRequest({{0, 1}}, {2}, hidden_));
  EXPECT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(shm.shared_memory_calls(), 2);
  EXPECT_EQ(shm.transport(), "shared memory");
}

TEST_F(ShmTransportTest, ARequestLargerThanASlotGoesOverTheStream) {
  StartServer(/*shared_memory=*/true);
  ExpertConnection shm(address_, SharedMemory(/*slots=*/2, /*slot_bytes=*/4096));
  ExpertConnection stream(address_);
  ASSERT_TRUE(shm.WaitForSharedMemory(kSettle).ok());
  // 4 rows of 64 floats (1 KiB) fit; 32 rows (8 KiB) do not.
  Answer small = CallAndWait(shm, RowsRequest({{0, 1}}, {4}, hidden_));
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(shm.shared_memory_calls(), 1);
  Answer large = CallAndWait(shm, RowsRequest({{0, 1}}, {32}, hidden_));
  ASSERT_TRUE(large.ok()) << large.status();
  EXPECT_EQ(shm.stream_calls(), 1);
  Answer reference = CallAndWait(stream, RowsRequest({{0, 1}}, {32}, hidden_));
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_EQ((*large)->outputs(0).data(), (*reference)->outputs(0).data());
}

TEST_F(ShmTransportTest, AServerWithoutSharedMemoryKeepsTheStream) {
  StartServer(/*shared_memory=*/false);
  ExpertConnection shm(address_, SharedMemory());
  const absl::Status refused = shm.WaitForSharedMemory(kSettle);
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("--shared_memory=false"));
  EXPECT_THAT(refused.message(), HasSubstr(address_));
  Answer answer = CallAndWait(shm, RowsRequest({{0, 1}}, {3}, hidden_));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(shm.stream_calls(), 1);
  EXPECT_EQ(shm.shared_memory_calls(), 0);
  EXPECT_EQ(shm.transport(), "grpc stream");
}

// Opens AttachSharedMemory by hand, as a client that does its own thing.
class RawAttach {
 public:
  RawAttach(const std::string& address, const std::string& name,
            uint64_t nonce) {
    stub_ = v1::ExpertService::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    v1::AttachSharedMemoryRequest request;
    request.set_name(name);
    request.set_nonce(nonce);
    reader_ = stub_->AttachSharedMemory(&context_, request);
  }
  // True once the server serves the segment.
  bool Attached() { return reader_->Read(&event_); }
  // The status of a call the server ended (after Attached() was false).
  grpc::Status Refusal() { return reader_->Finish(); }
  // Ends a served call from this side.
  grpc::Status End() {
    context_.TryCancel();
    while (reader_->Read(&event_)) {
    }
    return reader_->Finish();
  }

 private:
  std::unique_ptr<v1::ExpertService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::SharedMemoryEvent>> reader_;
  v1::SharedMemoryEvent event_;
};

TEST_F(ShmTransportTest, AttachRefusesSegmentsItCannotTrust) {
  StartServer(/*shared_memory=*/true);
  absl::StatusOr<std::unique_ptr<ShmSegment>> segment =
      ShmSegment::Create(1, 4096);
  ASSERT_TRUE(segment.ok()) << segment.status();
  struct Case {
    std::string name;
    uint64_t nonce;
    grpc::StatusCode code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"/etc/passwd", 1, grpc::StatusCode::INVALID_ARGUMENT, "hex digits"},
      {"/moe-shm-ffffffffffffffffffffffffffffffff", 1,
       grpc::StatusCode::NOT_FOUND, "another host"},
      {(*segment)->name(), (*segment)->nonce() ^ 1,
       grpc::StatusCode::INVALID_ARGUMENT, "nonce"},
  };
  for (const Case& c : cases) {
    RawAttach attach(address_, c.name, c.nonce);
    EXPECT_FALSE(attach.Attached()) << c.name;
    const grpc::Status status = attach.Refusal();
    EXPECT_EQ(status.error_code(), c.code) << c.name;
    EXPECT_THAT(status.error_message(), HasSubstr(c.says)) << c.name;
  }
}

// Posts `bytes` of `payload` as slot `i`'s request and returns the
// server's answer parsed from the slot.
v1::RunExpertsResponse PostRaw(ShmSegment& segment, int i, uint64_t call_id,
                               const std::string& payload, uint64_t bytes) {
  ShmSlotHeader& slot = segment.slot(i);
  std::memcpy(segment.request_area(i), payload.data(),
              std::min<size_t>(payload.size(), segment.slot_bytes()));
  slot.call_id = call_id;
  slot.request_bytes = bytes;
  const uint32_t seen = segment.header().responses.sequence.load();
  slot.state.store(kShmSlotRequest);
  segment.header().requests.Signal();
  uint32_t observed = seen;
  while (slot.state.load() != kShmSlotResponse) {
    segment.header().responses.Wait(observed, kSettle, absl::ZeroDuration());
    observed = segment.header().responses.sequence.load();
  }
  v1::RunExpertsResponse response;
  EXPECT_TRUE(response.ParseFromArray(segment.response_area(i),
                                      static_cast<int>(slot.response_bytes)));
  slot.state.store(kShmSlotFree);
  return response;
}

TEST_F(ShmTransportTest, BadSlotContentsAreAnsweredWithErrorsNotCrashes) {
  StartServer(/*shared_memory=*/true);
  absl::StatusOr<std::unique_ptr<ShmSegment>> created =
      ShmSegment::Create(2, 4096);
  ASSERT_TRUE(created.ok()) << created.status();
  ShmSegment& segment = **created;
  RawAttach attach(address_, segment.name(), segment.nonce());
  ASSERT_TRUE(attach.Attached());

  const v1::RunExpertsResponse garbage =
      PostRaw(segment, 0, 11, std::string(100, '\xff'), 100);
  EXPECT_EQ(garbage.call_id(), 11u);
  EXPECT_EQ(garbage.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(garbage.error_message(), HasSubstr("RunExpertsRequest"));

  const v1::RunExpertsResponse oversized =
      PostRaw(segment, 1, 12, "", segment.slot_bytes() + 1);
  EXPECT_EQ(oversized.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(oversized.error_message(), HasSubstr("claims a request"));

  v1::RunExpertsRequest nccl = *RowsRequest({{0, 1}}, {1}, hidden_);
  nccl.mutable_nccl()->set_link(1);
  const std::string nccl_bytes = nccl.SerializeAsString();
  const v1::RunExpertsResponse misplaced =
      PostRaw(segment, 0, 13, nccl_bytes, nccl_bytes.size());
  EXPECT_EQ(misplaced.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(misplaced.error_message(), HasSubstr("NCCL"));

  // The channel still serves a good request after all that.
  const std::string good = RowsRequest({{1, 5}}, {2}, hidden_)->SerializeAsString();
  const v1::RunExpertsResponse answered =
      PostRaw(segment, 1, 14, good, good.size());
  EXPECT_EQ(answered.error_code(), 0) << answered.error_message();
  EXPECT_EQ(answered.call_id(), 14u);
  ASSERT_EQ(answered.outputs_size(), 1);
  EXPECT_EQ(answered.outputs(0).data().size(), 2u * hidden_ * 4);
  EXPECT_EQ(attach.End().error_code(), grpc::StatusCode::CANCELLED);
}

// A fake expert server whose shared-memory channel holds every request
// until the test releases it, and whose stream echoes at once.
class HeldExpertService final : public v1::ExpertService::CallbackService {
 public:
  grpc::ServerWriteReactor<v1::SharedMemoryEvent>* AttachSharedMemory(
      grpc::CallbackServerContext*,
      const v1::AttachSharedMemoryRequest* request) override {
    return StartShmAttach(
        *request, /*accept=*/true,
        [this](const v1::RunExpertsRequest& in, v1::RunExpertsResponse* out,
               std::function<void(absl::Status)> done) {
          {
            absl::MutexLock lock(&mu_);
            if (hold_) {
              held_.push_back({&in, out, std::move(done)});
              held_changed_.SignalAll();
              return;
            }
          }
          Echo(in, out);
          done(absl::OkStatus());
        },
        nullptr, absl::ZeroDuration());
  }

  grpc::ServerBidiReactor<v1::RunExpertsRequest, v1::RunExpertsResponse>*
  ExpertStream(grpc::CallbackServerContext*) override {
    using Reactor =
        CallStreamReactor<v1::RunExpertsRequest, v1::RunExpertsResponse>;
    return Reactor::Start([](std::unique_ptr<v1::RunExpertsRequest> request,
                             Reactor::Reply reply) {
      auto response = std::make_unique<v1::RunExpertsResponse>();
      Echo(*request, response.get());
      reply(std::move(response));
    });
  }

  void WaitForHeld(size_t n) {
    absl::MutexLock lock(&mu_);
    while (held_.size() < n) held_changed_.Wait(&mu_);
  }

  // Answers every held request with its echo; with `hold` false, later
  // requests are answered at once.
  void ReleaseAll(bool hold = true) {
    std::deque<Held> held;
    {
      absl::MutexLock lock(&mu_);
      held.swap(held_);
      hold_ = hold;
    }
    for (Held& h : held) {
      Echo(*h.request, h.response);
      h.done(absl::OkStatus());
    }
  }

  static void Echo(const v1::RunExpertsRequest& in,
                   v1::RunExpertsResponse* out) {
    out->set_call_id(in.call_id());
    for (const v1::ExpertGroup& g : in.groups()) *out->add_outputs() = g.hidden();
  }

 private:
  struct Held {
    const v1::RunExpertsRequest* request;
    v1::RunExpertsResponse* response;
    std::function<void(absl::Status)> done;
  };
  absl::Mutex mu_;
  absl::CondVar held_changed_;
  bool hold_ ABSL_GUARDED_BY(mu_) = true;
  std::deque<Held> held_ ABSL_GUARDED_BY(mu_);
};

class HeldShmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<StartedServer> started =
        StartGrpcServer("held expert server", "127.0.0.1:0", {&service_});
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(started->server);
    address_ = absl::StrCat("127.0.0.1:", started->port);
  }
  void TearDown() override {
    service_.ReleaseAll();
    if (server_ != nullptr) server_->Shutdown();
  }

  HeldExpertService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  static constexpr int64_t kHidden = 8;
};

TEST_F(HeldShmTest, ABusySlotSendsTheNextCallOverTheStream) {
  ExpertConnection connection(address_, SharedMemory(/*slots=*/1));
  ASSERT_TRUE(connection.WaitForSharedMemory(kSettle).ok());
  std::shared_ptr<PendingCall> held =
      Send(connection, RowsRequest({{0, 1}}, {2}, kHidden));
  service_.WaitForHeld(1);
  // The only slot is taken: this call goes over the stream and is answered
  // while the first is still held.
  Answer second = CallAndWait(connection, RowsRequest({{0, 2}}, {3}, kHidden));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->outputs(0).shape(0), 3);
  EXPECT_EQ(connection.shared_memory_calls(), 1);
  EXPECT_EQ(connection.stream_calls(), 1);
  EXPECT_FALSE(held->done.HasBeenNotified());
  service_.ReleaseAll();
  held->done.WaitForNotification();
  ASSERT_TRUE(held->answer.ok()) << held->answer.status();
  EXPECT_EQ((*held->answer)->outputs(0).shape(0), 2);
}

TEST_F(HeldShmTest, ACallPastItsDeadlineFailsAndTheConnectionGoesOn) {
  ExpertConnection connection(address_, SharedMemory());
  ASSERT_TRUE(connection.WaitForSharedMemory(kSettle).ok());
  // Held forever: only its deadline ends it.
  std::shared_ptr<PendingCall> late = Send(
      connection, RowsRequest({{0, 1}}, {2}, kHidden), absl::Milliseconds(50));
  late->done.WaitForNotification();
  EXPECT_TRUE(absl::IsDeadlineExceeded(late->answer.status()))
      << late->answer.status();
  EXPECT_THAT(late->answer.status().message(), HasSubstr("shared memory"));
  // The link ended (the server is treated as stuck); the connection goes
  // on, over the stream or a new link.
  service_.ReleaseAll(/*hold=*/false);
  Answer next = CallAndWait(connection, RowsRequest({{0, 1}}, {1}, kHidden));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ((*next)->outputs(0).shape(0), 1);
}

TEST_F(HeldShmTest, TheServerGoingAwayFailsPendingCallsWithUnavailable) {
  ExpertConnection connection(address_, SharedMemory());
  ASSERT_TRUE(connection.WaitForSharedMemory(kSettle).ok());
  std::shared_ptr<PendingCall> pending =
      Send(connection, RowsRequest({{0, 1}}, {2}, kHidden));
  service_.WaitForHeld(1);
  server_->Shutdown(std::chrono::system_clock::now());
  pending->done.WaitForNotification();
  EXPECT_TRUE(absl::IsUnavailable(pending->answer.status()))
      << pending->answer.status();
  EXPECT_THAT(pending->answer.status().message(), HasSubstr("ended"));
  server_.reset();
}

// One call of hidden `kHidden` whose rows are unique to `tag`: the echo
// server's answer must carry exactly these bytes back.
std::unique_ptr<v1::RunExpertsRequest> TaggedRequest(int tag, int rows,
                                                     int64_t hidden) {
  auto request = std::make_unique<v1::RunExpertsRequest>();
  std::vector<float> x(rows * hidden);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<float>(tag) + static_cast<float>(i) * 1e-3f;
  }
  v1::ExpertGroup* group = request->add_groups();
  group->set_layer(0);
  group->set_expert(tag % 8);
  EncodeRows(x.data(), rows, hidden, v1::DTYPE_F32, group->mutable_hidden());
  return request;
}

// Waits for `call` the way DirectMoeExecutor::WaitMoe does: receiving
// answers on this thread while the connection has calls in flight.
void HelpUntilDone(ExpertConnection& connection, PendingCall& call,
                   absl::Duration max_wait) {
  while (!call.done.HasBeenNotified() && connection.HelpReceive(max_wait)) {
  }
  call.done.WaitForNotification();
}

TEST_F(HeldShmTest, AHelperWithNoCallInFlightReturnsAtOnce) {
  ExpertConnection connection(address_, SharedMemory());
  ASSERT_TRUE(connection.WaitForSharedMemory(kSettle).ok());
  // Nothing is owed: a helper that waited here would never be woken.
  EXPECT_FALSE(connection.HelpReceive(absl::InfiniteDuration()));
  ExpertConnection without(address_);
  EXPECT_FALSE(without.HelpReceive(absl::InfiniteDuration()));
}

TEST_F(HeldShmTest, AHelperReceivesTheAnswerItWaitsFor) {
  ExpertConnection connection(address_, SharedMemory());
  ASSERT_TRUE(connection.WaitForSharedMemory(kSettle).ok());
  std::unique_ptr<v1::RunExpertsRequest> request =
      TaggedRequest(7, 3, kHidden);
  const std::string sent = request->groups(0).hidden().SerializeAsString();
  std::shared_ptr<PendingCall> call = Send(connection, std::move(request));
  service_.WaitForHeld(1);
  std::thread releaser([this] { service_.ReleaseAll(); });
  // Waits without a bound: only the answer (or the link's end) wakes it.
  HelpUntilDone(connection, *call, absl::InfiniteDuration());
  releaser.join();
  ASSERT_TRUE(call->answer.ok()) << call->answer.status();
  EXPECT_EQ((*call->answer)->outputs(0).SerializeAsString(), sent);
  EXPECT_FALSE(connection.HelpReceive(absl::InfiniteDuration()));
}

TEST_F(HeldShmTest, AHelperIsWokenWhenItsCallFailsByItsDeadline) {
  ExpertConnection connection(address_, SharedMemory());
  ASSERT_TRUE(connection.WaitForSharedMemory(kSettle).ok());
  // Held forever: only the deadline ends it, and the link's end must wake
  // the helper, which waits without a bound.
  std::shared_ptr<PendingCall> late =
      Send(connection, TaggedRequest(1, 2, kHidden), absl::Milliseconds(50));
  HelpUntilDone(connection, *late, absl::InfiniteDuration());
  EXPECT_TRUE(absl::IsDeadlineExceeded(late->answer.status()))
      << late->answer.status();
}

TEST_F(HeldShmTest, HelpersAndTheReceiverTakeEachAnswerOnceIntoItsOwnCall) {
  service_.ReleaseAll(/*hold=*/false);  // answered at once
  ExpertConnection connection(address_, SharedMemory(/*slots=*/2));
  ASSERT_TRUE(connection.WaitForSharedMemory(kSettle).ok());
  constexpr int kCallsPerThread = 400;
  std::atomic<int> wrong{0};
  absl::Mutex mu;
  std::string first_error;
  // Two threads help, one leaves its answers to the receiver thread: slots
  // are freed and posted again while others are still looking at them.
  auto run = [&](int thread, bool help) {
    for (int k = 0; k < kCallsPerThread; ++k) {
      const int tag = thread * kCallsPerThread + k;
      std::unique_ptr<v1::RunExpertsRequest> request =
          TaggedRequest(tag, 1 + k % 4, kHidden);
      const std::string sent = request->groups(0).hidden().SerializeAsString();
      std::shared_ptr<PendingCall> call = Send(connection, std::move(request));
      if (help) {
        HelpUntilDone(connection, *call, absl::Milliseconds(50));
      } else {
        call->done.WaitForNotification();
      }
      const bool right = call->answer.ok() &&
                         (*call->answer)->outputs_size() == 1 &&
                         (*call->answer)->outputs(0).SerializeAsString() == sent;
      if (!right && wrong.fetch_add(1) == 0) {
        absl::MutexLock lock(&mu);
        first_error = absl::StrCat(
            "call ", tag, ": ",
            call->answer.ok() ? "answer of another call"
                              : call->answer.status().ToString());
      }
    }
  };
  std::thread a(run, 0, true), b(run, 1, true), c(run, 2, false);
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(wrong.load(), 0) << first_error;
  EXPECT_GT(connection.shared_memory_calls(), 0);
}

}  // namespace
}  // namespace moe
