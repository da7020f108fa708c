#include "router/expert_connection.h"

#include <cstdio>
#include <deque>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/rpc/channel_util.h"
#include "grpcpp/support/client_callback.h"

namespace moe {

// One ExpertStream call. Owns itself from Open until OnDone; the connection
// and every armed deadline alarm hold references too.
class ExpertConnection::Stream
    : public grpc::ClientBidiReactor<v1::RunExpertsRequest,
                                     v1::RunExpertsResponse> {
 public:
  static std::shared_ptr<Stream> Open(v1::ExpertService::Stub* stub,
                                      const std::string& address,
                                      DeadlineWatchdog* watchdog) {
    std::shared_ptr<Stream> stream(new Stream(address, watchdog));
    stream->self_ = stream;
    stub->async()->ExpertStream(&stream->context_, stream.get());
    // Writes are started from outside reactions (Send), so the call must
    // not complete before End() releases this hold.
    stream->AddHold();
    stream->reading_ = std::make_unique<v1::RunExpertsResponse>();
    stream->StartRead(stream->reading_.get());
    stream->StartCall();
    return stream;
  }

  // Queues the request, taking `request` and `done`; false (both left
  // untouched) when the stream has ended.
  bool Send(uint64_t id, std::unique_ptr<v1::RunExpertsRequest>& request,
            std::chrono::system_clock::time_point deadline, Done& done) {
    absl::MutexLock lock(&mu_);
    if (ended_) return false;
    Pending& pending = pending_[id];
    pending.done = std::move(done);
    std::shared_ptr<Stream> self = self_;
    pending.deadline = watchdog_->Arm(absl::FromChrono(deadline),
                                      [self, id] { self->Expire(id); });
    write_queue_.push_back(std::move(request));
    PumpLocked();
    return true;
  }

  bool ended() {
    absl::MutexLock lock(&mu_);
    return ended_;
  }

  // Ends the stream: every pending call fails with UNAVAILABLE.
  void Cancel() { context_.TryCancel(); }

  void WaitDone() { done_.WaitForNotification(); }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    written_.reset();
    if (!ok) {
      EndLocked();
      return;
    }
    PumpLocked();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      EndLocked();
      return;
    }
    std::unique_ptr<v1::RunExpertsResponse> response = std::move(reading_);
    Done done;
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(response->call_id());
      if (it != pending_.end()) {
        done = std::move(it->second.done);
        watchdog_->Cancel(it->second.deadline);
        pending_.erase(it);
      }
    }
    reading_ = std::make_unique<v1::RunExpertsResponse>();
    StartRead(reading_.get());
    if (!done) return;  // its deadline already failed it
    if (response->error_code() != 0) {
      done(absl::Status(static_cast<absl::StatusCode>(response->error_code()),
                        response->error_message()));
    } else {
      done(std::move(response));
    }
  }

  void OnDone(const grpc::Status& status) override {
    absl::flat_hash_map<uint64_t, Pending> failed;
    {
      absl::MutexLock lock(&mu_);
      ended_ = true;
      failed.swap(pending_);
    }
    const absl::Status error = absl::UnavailableError(absl::StrCat(
        "stream to expert server ", address_, " ended: ",
        status.ok() ? "closed by the server" : status.error_message()));
    for (auto& [id, pending] : failed) {
      watchdog_->Cancel(pending.deadline);
      pending.done(error);
    }
    done_.Notify();
    std::shared_ptr<Stream> self = std::move(self_);  // may delete this
  }

 private:
  struct Pending {
    Done done;
    DeadlineWatchdog::Handle deadline = 0;
  };

  Stream(std::string address, DeadlineWatchdog* watchdog)
      : address_(std::move(address)), watchdog_(watchdog) {}

  void Expire(uint64_t id) {
    Done done;
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(id);
      if (it == pending_.end()) return;
      done = std::move(it->second.done);
      pending_.erase(it);
    }
    done(absl::DeadlineExceededError(absl::StrCat(
        "expert server ", address_, " did not answer before the deadline")));
    // A server that misses a deadline is treated as stuck.
    context_.TryCancel();
  }

  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || ended_ || write_queue_.empty()) return;
    written_ = std::move(write_queue_.front());
    write_queue_.pop_front();
    writing_ = true;
    StartWrite(written_.get());
  }

  void EndLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ended_) return;
    ended_ = true;
    write_queue_.clear();
    context_.TryCancel();
    RemoveHold();
  }

  const std::string address_;
  DeadlineWatchdog* const watchdog_;  // the connection's
  grpc::ClientContext context_;
  std::unique_ptr<v1::RunExpertsResponse> reading_;  // reader only
  absl::Notification done_;
  absl::Mutex mu_;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<v1::RunExpertsRequest> written_ ABSL_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<v1::RunExpertsRequest>> write_queue_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Stream> self_;
};

ExpertConnection::ExpertConnection(std::string address,
                                   ShmLinkOptions shared_memory)
    : address_(std::move(address)),
      shm_options_(shared_memory),
      stub_(v1::ExpertService::NewStub(MakeChannel(address_))) {}

ExpertConnection::~ExpertConnection() {
  data_plane_.reset();
  std::shared_ptr<ShmExpertLink> shm;
  {
    absl::MutexLock lock(&mu_);
    shm = std::move(shm_);
  }
  if (shm != nullptr) shm->Close();
  std::shared_ptr<Stream> stream;
  {
    absl::MutexLock lock(&mu_);
    stream = std::move(stream_);
  }
  if (stream != nullptr) {
    stream->Cancel();
    stream->WaitDone();
  }
}

void ExpertConnection::AttachDataPlane(
    std::unique_ptr<NcclExpertLink> link,
    std::function<void(const absl::Status&)> on_broken) {
  data_plane_ = std::move(link);
  data_plane_->Start(
      [this](std::unique_ptr<v1::RunExpertsRequest> request,
             std::chrono::system_clock::time_point deadline, Done done) {
        CallOverStream(std::move(request), deadline, std::move(done));
      },
      std::move(on_broken));
}

std::shared_ptr<ShmExpertLink> ExpertConnection::SharedMemoryLink() {
  if (!shm_options_.enabled) return nullptr;
  absl::MutexLock lock(&mu_);
  if (shm_ != nullptr && !shm_->ended()) return shm_;
  const absl::Time now = absl::Now();
  if (shm_ != nullptr) {
    // A served link that ended (the server restarted) is tried again soon;
    // a refusal (another host, an old server) rarely changes.
    const absl::Duration retry =
        shm_->was_attached() ? absl::Seconds(1) : absl::Seconds(60);
    if (now - shm_started_ < retry) return nullptr;
  }
  shm_ = ShmExpertLink::Start(stub_.get(), address_, shm_options_, &watchdog_);
  shm_started_ = now;
  return shm_;
}

bool ExpertConnection::HelpReceive(absl::Duration max_wait) {
  std::shared_ptr<ShmExpertLink> link;
  {
    absl::MutexLock lock(&mu_);
    link = shm_;
  }
  return link != nullptr && link->HelpReceive(max_wait);
}

std::string ExpertConnection::transport() {
  if (nccl_active()) return "nccl";
  std::shared_ptr<ShmExpertLink> link = SharedMemoryLink();
  return link != nullptr && link->attached() ? "shared memory" : "grpc stream";
}

absl::Status ExpertConnection::WaitForSharedMemory(absl::Duration timeout) {
  if (!shm_options_.enabled) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shared memory to expert server ", address_, " is off"));
  }
  std::shared_ptr<ShmExpertLink> link = SharedMemoryLink();
  if (link == nullptr) {
    absl::MutexLock lock(&mu_);
    link = shm_;
  }
  return link->WaitUntilSettled(timeout);
}

const char* ExpertConnection::TransportName(Transport transport) {
  switch (transport) {
    case Transport::kNccl:
      return "nccl";
    case Transport::kSharedMemory:
      return "shared_memory";
    case Transport::kStream:
      break;
  }
  return "grpc_stream";
}

ExpertConnection::Transport ExpertConnection::Call(
    std::unique_ptr<v1::RunExpertsRequest> request,
    std::chrono::system_clock::time_point deadline, Done done) {
  if (nccl_active()) {
    data_plane_->Call(std::move(request), deadline, std::move(done));
    return Transport::kNccl;
  }
  if (std::shared_ptr<ShmExpertLink> link = SharedMemoryLink();
      link != nullptr) {
    uint64_t id;
    {
      absl::MutexLock lock(&mu_);
      id = next_call_id_++;
    }
    if (link->TryCall(id, request, deadline, done)) {
      shm_calls_.fetch_add(1, std::memory_order_relaxed);
      return Transport::kSharedMemory;
    }
  }
  stream_calls_.fetch_add(1, std::memory_order_relaxed);
  CallOverStream(std::move(request), deadline, std::move(done));
  return Transport::kStream;
}

void ExpertConnection::CallOverStream(
    std::unique_ptr<v1::RunExpertsRequest> request,
    std::chrono::system_clock::time_point deadline, Done done) {
  // A stream can end between the check and the send (the server went
  // away); one retry on a fresh stream covers that.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::shared_ptr<Stream> stream;
    uint64_t id;
    {
      absl::MutexLock lock(&mu_);
      if (stream_ == nullptr || stream_->ended()) {
        stream_ = Stream::Open(stub_.get(), address_, &watchdog_);
      }
      stream = stream_;
      id = next_call_id_++;
    }
    request->set_call_id(id);
    if (stream->Send(id, request, deadline, done)) return;
  }
  done(absl::UnavailableError(
      absl::StrCat("cannot open a stream to expert server ", address_)));
}

void AttachSharedMemoryAtStart(
    const std::vector<std::unique_ptr<ExpertConnection>>& connections,
    const std::string& who, absl::Duration timeout) {
  for (const std::unique_ptr<ExpertConnection>& connection : connections) {
    absl::Status attached = connection->WaitForSharedMemory(timeout);
    if (absl::IsFailedPrecondition(attached) &&
        absl::StrContains(attached.message(), " is off")) {
      return;  // shared memory is off for every connection
    }
    if (attached.ok()) {
      std::fprintf(stderr, "%s: expert server %s: MoE calls over shared memory\n",
                   who.c_str(), connection->address().c_str());
    } else {
      std::fprintf(stderr,
                   "%s: expert server %s: MoE calls over the gRPC stream (%s)\n",
                   who.c_str(), connection->address().c_str(),
                   std::string(attached.message()).c_str());
    }
  }
}

}  // namespace moe
