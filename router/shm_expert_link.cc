#include "router/shm_expert_link.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/rpc/grpc_status.h"

namespace moe {
namespace {

// How long the receiver sleeps at most before it looks at its stop flag
// again (the link's end also wakes it at once).
constexpr absl::Duration kIdleWait = absl::Milliseconds(200);

// Bytes a response may need beyond its request's (the outputs mirror the
// groups' rows; the headers differ by a few bytes per group).
uint64_t ResponseMargin(const v1::RunExpertsRequest& request) {
  return 256 + 64 * static_cast<uint64_t>(request.groups_size());
}

}  // namespace

std::shared_ptr<ShmExpertLink> ShmExpertLink::Start(
    v1::ExpertService::Stub* stub, const std::string& address,
    const ShmLinkOptions& options, DeadlineWatchdog* watchdog) {
  std::shared_ptr<ShmExpertLink> link(
      new ShmExpertLink(address, options, watchdog));
  absl::StatusOr<std::unique_ptr<ShmSegment>> segment =
      ShmSegment::Create(options.slots, options.slot_bytes);
  if (!segment.ok()) {
    absl::MutexLock lock(&link->mu_);
    link->ended_ = true;
    link->end_reason_ = segment.status();
    link->settled_.Notify();
    link->done_.Notify();
    return link;
  }
  link->segment_ = *std::move(segment);
  link->request_.set_name(link->segment_->name());
  link->request_.set_nonce(link->segment_->nonce());
  {
    absl::MutexLock lock(&link->mu_);
    link->pending_.resize(options.slots);
    link->busy_.assign(options.slots, false);
    link->receiving_.assign(options.slots, false);
    link->self_ = link;
  }
  stub->async()->AttachSharedMemory(&link->context_, &link->request_,
                                    link.get());
  link->StartRead(&link->event_);
  link->StartCall();
  return link;
}

ShmExpertLink::ShmExpertLink(std::string address,
                             const ShmLinkOptions& options,
                             DeadlineWatchdog* watchdog)
    : address_(std::move(address)), options_(options), watchdog_(watchdog) {}

ShmExpertLink::~ShmExpertLink() {
  stopping_.store(true);
  if (receiver_.joinable()) {
    // The last reference can only be dropped on the receiver's own thread
    // if gRPC ran OnDone inline there; it is about to return anyway.
    if (receiver_.get_id() == std::this_thread::get_id()) {
      receiver_.detach();
    } else {
      receiver_.join();
    }
  }
}

bool ShmExpertLink::attached() const {
  absl::MutexLock lock(&mu_);
  return attached_;
}

bool ShmExpertLink::ended() const {
  absl::MutexLock lock(&mu_);
  return ended_;
}

bool ShmExpertLink::was_attached() const {
  absl::MutexLock lock(&mu_);
  return ever_attached_;
}

absl::Status ShmExpertLink::WaitUntilSettled(absl::Duration timeout) {
  if (!settled_.WaitForNotificationWithTimeout(timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "expert server ", address_, " did not answer AttachSharedMemory in ",
        absl::FormatDuration(timeout)));
  }
  absl::MutexLock lock(&mu_);
  return attached_ ? absl::OkStatus() : end_reason_;
}

void ShmExpertLink::Close() {
  context_.TryCancel();
  done_.WaitForNotification();
  // The receiver uses the connection's watchdog: it stops before Close
  // returns, so the connection may go away.
  stopping_.store(true);
  if (segment_ != nullptr) segment_->header().responses.Signal();
  if (receiver_.joinable() &&
      receiver_.get_id() != std::this_thread::get_id()) {
    receiver_.join();
  }
}

bool ShmExpertLink::TryCall(uint64_t call_id,
                            std::unique_ptr<v1::RunExpertsRequest>& request,
                            std::chrono::system_clock::time_point deadline,
                            Done& done) {
  absl::MutexLock lock(&mu_);
  if (!attached_ || ended_) return false;
  const uint64_t bytes = request->ByteSizeLong();
  if (bytes + ResponseMargin(*request) > segment_->slot_bytes()) return false;
  int free_slot = -1;
  for (int i = 0; i < static_cast<int>(busy_.size()); ++i) {
    if (!busy_[i]) {
      free_slot = i;
      break;
    }
  }
  if (free_slot < 0) return false;
  const int i = free_slot;
  busy_[i] = true;
  ++in_flight_;
  ShmSlotHeader& slot = segment_->slot(i);
  slot.call_id = call_id;
  slot.posted = ++posted_;
  slot.request_bytes = bytes;
  request->SerializeToArray(segment_->request_area(i), static_cast<int>(bytes));
  Pending& pending = pending_[i];
  pending.call_id = call_id;
  pending.done = std::move(done);
  std::shared_ptr<ShmExpertLink> self = self_;
  pending.deadline =
      watchdog_->Arm(absl::FromChrono(deadline),
                     [self, i, call_id] { self->Expire(i, call_id); });
  request.reset();
  slot.state.store(kShmSlotRequest, std::memory_order_release);
  segment_->header().requests.Signal();
  return true;
}

void ShmExpertLink::OnReadDone(bool ok) {
  if (!ok) return;  // the call has ended; OnDone follows
  bool first = false;
  {
    absl::MutexLock lock(&mu_);
    if (!ever_attached_ && !ended_) {
      first = true;
      attached_ = true;
      ever_attached_ = true;
    }
  }
  if (first) {
    // The server has it mapped: the name is no longer needed.
    segment_->Unlink();
    receiver_ = std::thread([this] { ReceiveLoop(); });
    settled_.Notify();
  }
  // The next read completes only when the call ends.
  StartRead(&event_);
}

void ShmExpertLink::OnDone(const grpc::Status& status) {
  std::shared_ptr<ShmExpertLink> self;
  bool was_attached;
  {
    absl::MutexLock lock(&mu_);
    was_attached = ever_attached_;
    ended_ = true;
    attached_ = false;
    end_reason_ =
        was_attached
            ? absl::UnavailableError(absl::StrCat(
                  "shared memory to expert server ", address_,
                  " ended: ", status.error_message()))
            : absl::Status(FromGrpcStatus(status).code(),
                           absl::StrCat("expert server ", address_,
                                        " did not take shared memory: ",
                                        status.error_message()));
    self = std::move(self_);
  }
  stopping_.store(true);
  // The receiver sleeps on the response event; a bump wakes it.
  if (segment_ != nullptr) segment_->header().responses.Signal();
  FailPending(absl::UnavailableError(absl::StrCat(
      "shared memory to expert server ", address_,
      " ended: ", status.ok() ? "closed by the server" : status.error_message())));
  if (!settled_.HasBeenNotified()) settled_.Notify();
  done_.Notify();
  // `self` may hold the last reference: this may be deleted on return.
}

void ShmExpertLink::FailPending(const absl::Status& reason) {
  std::vector<Done> failed;
  {
    absl::MutexLock lock(&mu_);
    for (Pending& pending : pending_) {
      if (!pending.done) continue;
      watchdog_->Cancel(pending.deadline);
      failed.push_back(std::move(pending.done));
      pending.done = nullptr;
      pending.deadline = 0;
    }
  }
  for (Done& done : failed) done(reason);
}

void ShmExpertLink::Expire(int slot, uint64_t call_id) {
  Done done;
  {
    absl::MutexLock lock(&mu_);
    Pending& pending = pending_[slot];
    if (pending.call_id != call_id || !pending.done) return;
    done = std::move(pending.done);
    pending.done = nullptr;
    pending.deadline = 0;  // it has run
  }
  // A server that misses a deadline is treated as stuck: no call sent
  // after this one's failure is reported may go to it.
  Break();
  done(absl::DeadlineExceededError(
      absl::StrCat("expert server ", address_,
                   " did not answer before the deadline (shared memory)")));
}

void ShmExpertLink::Break() {
  {
    absl::MutexLock lock(&mu_);
    attached_ = false;  // later calls go over the stream from now on
  }
  context_.TryCancel();
}

void ShmExpertLink::ReceiveLoop() {
  ShmEvent& responses = segment_->header().responses;
  while (!stopping_.load()) {
    // Read the counter before looking: an answer written after the look
    // changes it, so the wait returns at once.
    const uint32_t seen = responses.sequence.load(std::memory_order_seq_cst);
    // While a helper waits, the answers are its to take (it takes any it
    // left behind once it stops waiting, see HelpReceive).
    const bool helped = helpers_.load(std::memory_order_seq_cst) > 0;
    if (!helped && ReceiveAnswered(/*counted_in_helpers=*/false)) continue;
    int in_flight;
    {
      absl::MutexLock lock(&mu_);
      in_flight = in_flight_;
    }
    responses.Wait(seen, kIdleWait,
                   in_flight > 0 && !helped ? options_.spin
                                            : absl::ZeroDuration());
  }
}

bool ShmExpertLink::ReceiveAnswered(bool counted_in_helpers) {
  bool received = false;
  for (int i = 0; i < segment_->num_slots(); ++i) {
    if (segment_->slot(i).state.load(std::memory_order_seq_cst) ==
        kShmSlotResponse) {
      received |= Receive(i, counted_in_helpers);
    }
  }
  return received;
}

bool ShmExpertLink::HelpReceive(absl::Duration max_wait) {
  if (segment_ == nullptr) return false;
  ShmEvent& responses = segment_->header().responses;
  // Announced before the counter is read and the calls are counted: an
  // answer the receiver thread was already taking when this look missed it
  // bumps the counter once it is done (see Receive), so the wait returns.
  helpers_.fetch_add(1, std::memory_order_seq_cst);
  const uint32_t seen = responses.sequence.load(std::memory_order_seq_cst);
  bool in_flight;
  {
    absl::MutexLock lock(&mu_);
    in_flight = attached_ && !ended_ && in_flight_ > 0;
  }
  if (in_flight && !ReceiveAnswered(/*counted_in_helpers=*/true)) {
    responses.Wait(seen, max_wait, absl::ZeroDuration());
  }
  helpers_.fetch_sub(1, std::memory_order_seq_cst);
  // After the count dropped: takes the answers that arrived while the
  // receiver stood back for this helper; later ones are the receiver's.
  if (in_flight) ReceiveAnswered(/*counted_in_helpers=*/false);
  return in_flight;
}

bool ShmExpertLink::Receive(int i, bool counted_in_helpers) {
  Pending pending;
  {
    absl::MutexLock lock(&mu_);
    // Not ours to take (a confused server), or another thread took it: it
    // is being taken, or it was taken and the slot already holds the next
    // call (the state is read again under the lock, which TryCall holds
    // when it posts).
    if (!busy_[i] || receiving_[i] ||
        segment_->slot(i).state.load(std::memory_order_acquire) !=
            kShmSlotResponse) {
      return false;
    }
    receiving_[i] = true;
    pending = std::move(pending_[i]);
    pending_[i] = Pending();
  }
  ShmSlotHeader& slot = segment_->slot(i);
  const uint64_t bytes = slot.response_bytes;
  auto response = std::make_unique<v1::RunExpertsResponse>();
  const bool parsed =
      bytes <= segment_->slot_bytes() &&
      response->ParseFromArray(segment_->response_area(i),
                               static_cast<int>(bytes));
  slot.state.store(kShmSlotFree, std::memory_order_release);
  {
    absl::MutexLock lock(&mu_);
    busy_[i] = false;
    receiving_[i] = false;
    --in_flight_;
  }
  // Once the call's done has run: a helper that looked while this thread
  // was taking the answer may be waiting for it; wake it to look again.
  // Bumping the response counter is harmless (the server only adds to it).
  struct WakeHelpers {
    ShmExpertLink* link;
    int self;  // 1 when this thread is counted in helpers_
    ~WakeHelpers() {
      if (link->helpers_.load(std::memory_order_seq_cst) > self) {
        link->segment_->header().responses.Signal();
      }
    }
  } wake_helpers{this, counted_in_helpers ? 1 : 0};
  if (pending.deadline != 0) watchdog_->Cancel(pending.deadline);
  if (!pending.done) return true;  // its deadline or the link's end failed it
  if (!parsed || response->call_id() != pending.call_id) {
    Break();
    pending.done(absl::InternalError(absl::StrCat(
        "expert server ", address_, " wrote a malformed answer into shared "
        "memory slot ", i, " (", bytes, " bytes)")));
    return true;
  }
  if (response->error_code() != 0) {
    pending.done(
        absl::Status(static_cast<absl::StatusCode>(response->error_code()),
                     response->error_message()));
  } else {
    pending.done(std::move(response));
  }
  return true;
}

}  // namespace moe
