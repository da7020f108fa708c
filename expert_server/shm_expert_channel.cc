#include "expert_server/shm_expert_channel.h"

#include <unistd.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/rpc/grpc_status.h"

namespace moe {
namespace {

// How long the channel's thread sleeps at most before it looks at its stop
// flag again (Stop also wakes it at once).
constexpr absl::Duration kIdleWait = absl::Milliseconds(200);

// Writes the answer to slot `i`'s call and wakes the client.
void Answer(ShmSegment& segment, int i, uint64_t call_id,
            v1::RunExpertsResponse& response, const absl::Status& status) {
  response.set_call_id(call_id);
  if (!status.ok()) {
    response.clear_outputs();
    response.set_error_code(static_cast<int>(status.code()));
    response.set_error_message(std::string(status.message()));
  }
  size_t bytes = response.ByteSizeLong();
  if (bytes > segment.slot_bytes()) {
    const size_t produced = bytes;
    response.Clear();
    response.set_call_id(call_id);
    response.set_error_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
    response.set_error_message(absl::StrCat(
        "shared memory: the response of ", produced,
        " bytes does not fit the slot of ", segment.slot_bytes(), " bytes"));
    bytes = response.ByteSizeLong();
  }
  response.SerializeToArray(segment.response_area(i), static_cast<int>(bytes));
  ShmSlotHeader& slot = segment.slot(i);
  slot.response_bytes = bytes;
  slot.state.store(kShmSlotResponse, std::memory_order_release);
  segment.header().responses.Signal();
}

// Refuses an attach with `status`.
class RefusedAttach : public grpc::ServerWriteReactor<v1::SharedMemoryEvent> {
 public:
  explicit RefusedAttach(const absl::Status& status) {
    Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

// Holds an attached segment's call open while its channel serves it.
class ServedAttach : public grpc::ServerWriteReactor<v1::SharedMemoryEvent> {
 public:
  explicit ServedAttach(std::unique_ptr<ShmExpertChannel> channel)
      : channel_(std::move(channel)) {
    event_.set_server_pid(getpid());
    StartWrite(&event_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) End(grpc::Status(grpc::StatusCode::CANCELLED, "client gone"));
    // Otherwise the call stays open: its end is the transport's end.
  }
  void OnCancel() override {
    End(grpc::Status(grpc::StatusCode::CANCELLED,
                     "shared-memory transport ended"));
  }
  void OnDone() override { delete this; }

 private:
  void End(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return;
      ended_ = true;
    }
    channel_->Stop();
    Finish(status);
  }

  std::unique_ptr<ShmExpertChannel> channel_;
  v1::SharedMemoryEvent event_;
  absl::Mutex mu_;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

ShmExpertChannel::ShmExpertChannel(std::shared_ptr<ShmSegment> segment,
                                   Handler handler,
                                   std::function<void()> on_start,
                                   absl::Duration spin)
    : segment_(std::move(segment)),
      handler_(std::move(handler)),
      on_start_(std::move(on_start)),
      spin_(spin) {
  thread_ = std::thread([this] { Loop(); });
}

ShmExpertChannel::~ShmExpertChannel() { Stop(); }

void ShmExpertChannel::Stop() {
  stopping_.store(true);
  // The request event is the one the thread sleeps on; a bump the client
  // never reads wakes it.
  segment_->header().requests.Signal();
  if (thread_.joinable()) thread_.join();
}

void ShmExpertChannel::Loop() {
  if (on_start_) on_start_();
  ShmEvent& requests = segment_->header().requests;
  std::vector<std::pair<uint64_t, int>> posted;  // (post order, slot)
  while (!stopping_.load()) {
    // Read the counter before looking: a request posted after the look
    // changes it, so the wait below returns at once.
    const uint32_t seen = requests.sequence.load(std::memory_order_acquire);
    posted.clear();
    for (int i = 0; i < segment_->num_slots(); ++i) {
      ShmSlotHeader& slot = segment_->slot(i);
      if (slot.state.load(std::memory_order_acquire) == kShmSlotRequest) {
        posted.emplace_back(slot.posted, i);
      }
    }
    if (posted.empty()) {
      requests.Wait(seen, kIdleWait, spin_);
      continue;
    }
    std::sort(posted.begin(), posted.end());
    for (const auto& [order, i] : posted) Serve(i);
  }
}

void ShmExpertChannel::Serve(int i) {
  ShmSlotHeader& slot = segment_->slot(i);
  uint32_t expected = kShmSlotRequest;
  if (!slot.state.compare_exchange_strong(expected, kShmSlotServing,
                                          std::memory_order_acq_rel)) {
    return;  // the client changed it meanwhile (it misbehaves); skip it
  }
  const uint64_t call_id = slot.call_id;
  const uint64_t bytes = slot.request_bytes;
  auto response = std::make_shared<v1::RunExpertsResponse>();
  std::shared_ptr<ShmSegment> segment = segment_;
  auto answer = [segment, i, call_id, response](absl::Status status) {
    Answer(*segment, i, call_id, *response, status);
  };
  if (bytes > segment_->slot_bytes()) {
    answer(absl::InvalidArgumentError(absl::StrCat(
        "shared memory: slot ", i, " claims a request of ", bytes,
        " bytes, more than its ", segment_->slot_bytes())));
    return;
  }
  auto request = std::make_shared<v1::RunExpertsRequest>();
  if (!request->ParseFromArray(segment_->request_area(i),
                               static_cast<int>(bytes))) {
    answer(absl::InvalidArgumentError(absl::StrCat(
        "shared memory: slot ", i, " does not hold a RunExpertsRequest (",
        bytes, " bytes)")));
    return;
  }
  if (request->has_nccl()) {
    answer(absl::InvalidArgumentError(
        "shared memory: a request whose rows travel over NCCL belongs on "
        "ExpertStream"));
    return;
  }
  handler_(*request, response.get(),
           [request, answer = std::move(answer)](absl::Status status) {
             answer(std::move(status));
           });
}

grpc::ServerWriteReactor<v1::SharedMemoryEvent>* StartShmAttach(
    const v1::AttachSharedMemoryRequest& request, bool accept,
    ShmExpertChannel::Handler handler, std::function<void()> on_start,
    absl::Duration spin) {
  if (!accept) {
    return new RefusedAttach(absl::FailedPreconditionError(
        "this expert server was started with --shared_memory=false"));
  }
  absl::StatusOr<std::unique_ptr<ShmSegment>> segment =
      ShmSegment::Attach(request.name(), request.nonce());
  if (!segment.ok()) return new RefusedAttach(segment.status());
  // Both sides have it mapped now; the name is no longer needed.
  (*segment)->Unlink();
  return new ServedAttach(std::make_unique<ShmExpertChannel>(
      std::shared_ptr<ShmSegment>(*std::move(segment)), std::move(handler),
      std::move(on_start), spin));
}

}  // namespace moe
