// The client side of the same-host transport to one expert server
// (core/rpc/shm_segment.h), used by ExpertConnection (router and attention
// server alike): creates the segment, asks the server to serve it
// (ExpertService.AttachSharedMemory) and, once it does, writes calls into
// the segment's slots and wakes the server's channel thread directly; a
// receiver thread here waits for the answers and runs each call's `done`.
// A caller that has nothing to do but wait for its answer can receive it
// itself (HelpReceive), which saves the hand-off from the receiver to it.
//
// The link ends when the AttachSharedMemory call ends (the server went
// away, shut down or refused): calls in flight then fail with UNAVAILABLE,
// as on a broken ExpertStream. A call past its deadline fails with
// DEADLINE_EXCEEDED and ends the link (the server is treated as stuck).
// While the link is attaching, ended, out of free slots, or the request
// does not fit a slot, TryCall declines and the caller uses the stream.
#ifndef MOE_ROUTER_SHM_EXPERT_LINK_H_
#define MOE_ROUTER_SHM_EXPERT_LINK_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/deadline_watchdog.h"
#include "core/rpc/shm_segment.h"
#include "grpcpp/support/client_callback.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe {

struct ShmLinkOptions {
  // Off: ExpertConnection never tries shared memory.
  bool enabled = false;
  // Calls in flight at once over the segment (more go over the stream).
  int slots = 4;
  // Bytes of each slot's request and response areas; a larger request goes
  // over the stream. 1 MiB holds 64 tokens of hidden 4096 in F32.
  uint64_t slot_bytes = uint64_t{1} << 20;
  // How long the receiver spins for an answer before it sleeps.
  absl::Duration spin = absl::Microseconds(10);
};

class ShmExpertLink
    : public grpc::ClientReadReactor<v1::SharedMemoryEvent> {
 public:
  using Done = std::function<void(
      absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>>)>;

  // Creates the segment and starts AttachSharedMemory on `stub` (which
  // must outlive the link). Never blocks on the server; a segment that
  // cannot be created gives a link that has already ended, saying why.
  static std::shared_ptr<ShmExpertLink> Start(v1::ExpertService::Stub* stub,
                                              const std::string& address,
                                              const ShmLinkOptions& options,
                                              DeadlineWatchdog* watchdog);
  ~ShmExpertLink() override;

  // Sends the call over the segment and runs `done` once, on the
  // receiver's thread (or the watchdog's, past `deadline`). False, with
  // `request` and `done` untouched, when the link is not attached, every
  // slot is busy or the request does not fit a slot.
  bool TryCall(uint64_t call_id,
               std::unique_ptr<v1::RunExpertsRequest>& request,
               std::chrono::system_clock::time_point deadline, Done& done);

  // For a thread that would otherwise sleep until its calls' `done`s run:
  // waits at most `max_wait` for an answer on this link and receives the
  // answers there are, running their `done`s on the calling thread (the
  // receiver thread stands back while a helper waits). Returns
  // false at once, without waiting, when no call is in flight or the link
  // is not attached; true after it waited or received, whether or not the
  // caller's own call was among the answers. It does not spin: the server
  // computing the answer may need this thread's core.
  bool HelpReceive(absl::Duration max_wait);

  bool attached() const;
  bool ended() const;
  // Whether the server ever served the segment.
  bool was_attached() const;
  // OK once attached; why, once ended; DEADLINE_EXCEEDED when the server
  // has not answered within `timeout`.
  absl::Status WaitUntilSettled(absl::Duration timeout);

  // Ends the link: cancels the call and waits for it to end (pending calls
  // fail with UNAVAILABLE) and for the receiver to stop. Idempotent; not
  // from a `done`.
  void Close();

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  struct Pending {
    uint64_t call_id = 0;
    Done done;  // null: free, or already failed by its deadline
    DeadlineWatchdog::Handle deadline = 0;
  };

  ShmExpertLink(std::string address, const ShmLinkOptions& options,
                DeadlineWatchdog* watchdog);
  void ReceiveLoop();
  // Receives every slot that holds an answer; true when it took any.
  // `counted_in_helpers`: the calling thread is one of helpers_.
  bool ReceiveAnswered(bool counted_in_helpers);
  // Takes slot `i`'s answer (its state is kShmSlotResponse) and runs its
  // call's done; false when the slot holds no call of this link, or
  // another thread is already taking it.
  bool Receive(int i, bool counted_in_helpers);
  void Expire(int slot, uint64_t call_id);
  // Stops taking calls at once and ends the link (the server misbehaved).
  void Break();
  // Ends the link with `reason` for the calls still pending.
  void FailPending(const absl::Status& reason);

  const std::string address_;
  const ShmLinkOptions options_;
  DeadlineWatchdog* const watchdog_;
  std::unique_ptr<ShmSegment> segment_;  // null when creating it failed
  grpc::ClientContext context_;
  v1::AttachSharedMemoryRequest request_;
  v1::SharedMemoryEvent event_;
  absl::Notification settled_;  // attached or ended
  absl::Notification done_;     // the call has ended (or never started)
  std::thread receiver_;
  std::atomic<bool> stopping_{false};  // the receiver's stop flag


  mutable absl::Mutex mu_;
  bool attached_ ABSL_GUARDED_BY(mu_) = false;
  bool ever_attached_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_reason_ ABSL_GUARDED_BY(mu_);
  std::vector<Pending> pending_ ABSL_GUARDED_BY(mu_);  // by slot
  std::vector<bool> busy_ ABSL_GUARDED_BY(mu_);        // by slot
  // By slot: a thread (the receiver or a helper) is taking its answer.
  std::vector<bool> receiving_ ABSL_GUARDED_BY(mu_);
  // Threads inside HelpReceive; a receive by another thread wakes them.
  std::atomic<int> helpers_{0};
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t posted_ ABSL_GUARDED_BY(mu_) = 0;
  // Held from Start until OnDone (the reactor must outlive its call).
  std::shared_ptr<ShmExpertLink> self_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_ROUTER_SHM_EXPERT_LINK_H_
