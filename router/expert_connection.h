// The router's link to one expert server: calls multiplexed over one
// long-lived ExpertService.ExpertStream, matched to their answers by
// call_id. Saves the per-call setup of unary RPCs on the hot path.
//
// Each call has a deadline; when it passes the call fails with
// DEADLINE_EXCEEDED and the stream is cancelled (a server that misses a
// deadline is treated as stuck), which fails every other call on it with
// UNAVAILABLE. The next call opens a new stream.
//
// With shared memory enabled (ShmLinkOptions), the connection also asks the
// server to serve a same-host segment (router/shm_expert_link.h) and sends
// the calls that fit over it once it does; calls go over the stream while
// it attaches, when it is refused (another host or container, an old
// server), when its slots are busy, and after it ends until the next
// attach (tried again 1 s after a served link ended, 60 s after a refusal).
//
// With the NCCL data plane attached (AttachDataPlane) the groups' rows go
// GPU to GPU instead (router/nccl_expert_link.h) and the stream carries the
// calls' control messages; when that link breaks, calls go back to the
// stream with their rows.
#ifndef MOE_ROUTER_EXPERT_CONNECTION_H_
#define MOE_ROUTER_EXPERT_CONNECTION_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/deadline_watchdog.h"
#include "moe/v1/expert.grpc.pb.h"
#include "router/nccl_expert_link.h"
#include "router/shm_expert_link.h"

namespace moe {

// Thread-safe.
class ExpertConnection {
 public:
  // Receives the answer (owned by the callee) or the error. Runs on a gRPC
  // thread; inside Call only when no stream can be opened at all.
  using Done = std::function<void(
      absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>>)>;

  explicit ExpertConnection(std::string address,
                            ShmLinkOptions shared_memory = ShmLinkOptions());
  ~ExpertConnection();

  const std::string& address() const { return address_; }
  v1::ExpertService::Stub& stub() { return *stub_; }

  // How a call travelled.
  enum class Transport { kNccl, kSharedMemory, kStream };
  static const char* TransportName(Transport transport);

  // Sends `request` (its call_id is assigned here) and runs `done` once;
  // returns the transport it took. Errors: the server's own error for the
  // request (its code), UNAVAILABLE when the stream (or the shared-memory
  // link) broke, DEADLINE_EXCEEDED past `deadline`.
  Transport Call(std::unique_ptr<v1::RunExpertsRequest> request,
                 std::chrono::system_clock::time_point deadline, Done done);

  // Sends the rows of later calls over `link` while it works; `on_broken`
  // runs once, with the reason, when it breaks (calls then go over the
  // stream with their rows again). Call at most once, before the first
  // Call.
  void AttachDataPlane(std::unique_ptr<NcclExpertLink> link,
                       std::function<void(const absl::Status&)> on_broken);
  // Which transport the next call that fits would use: "nccl", "shared
  // memory" or "grpc stream".
  std::string transport();
  // Starts the shared-memory attach if none is under way and waits for it:
  // OK once calls go over shared memory, otherwise why not
  // (FAILED_PRECONDITION when it is not enabled). For startup logs, tests
  // and benchmarks; calls never wait for it.
  absl::Status WaitForSharedMemory(absl::Duration timeout);
  // ShmExpertLink::HelpReceive on the current shared-memory link; false at
  // once when there is none or it has no call in flight.
  bool HelpReceive(absl::Duration max_wait);
  // Calls sent over shared memory and over the stream so far.
  int64_t shared_memory_calls() const { return shm_calls_.load(); }
  int64_t stream_calls() const { return stream_calls_.load(); }

  // True while calls go over the NCCL data plane.
  bool nccl_active() const {
    return data_plane_ != nullptr && data_plane_->usable();
  }

 private:
  class Stream;

  // Call over the ExpertStream, rows in the request.
  void CallOverStream(std::unique_ptr<v1::RunExpertsRequest> request,
                      std::chrono::system_clock::time_point deadline,
                      Done done);

  // The current shared-memory link, started (again) when due; null when
  // shared memory is off or no link is due yet.
  std::shared_ptr<ShmExpertLink> SharedMemoryLink();

  const std::string address_;
  const ShmLinkOptions shm_options_;
  std::unique_ptr<v1::ExpertService::Stub> stub_;
  DeadlineWatchdog watchdog_;  // the calls' deadlines
  absl::Mutex mu_;
  std::shared_ptr<Stream> stream_ ABSL_GUARDED_BY(mu_);  // null: none open
  uint64_t next_call_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::shared_ptr<ShmExpertLink> shm_ ABSL_GUARDED_BY(mu_);
  absl::Time shm_started_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> shm_calls_{0};
  std::atomic<int64_t> stream_calls_{0};
  // Set before the first call; destroyed before the stream (its thread
  // sends on it).
  std::unique_ptr<NcclExpertLink> data_plane_;
};

// With shared memory enabled: attaches every connection's segment before
// the first call (waiting at most `timeout` for each server) and prints on
// stderr, as "<who>: expert server ADDRESS: ...", which transport each
// server's calls take and why a server stays on gRPC.
void AttachSharedMemoryAtStart(
    const std::vector<std::unique_ptr<ExpertConnection>>& connections,
    const std::string& who, absl::Duration timeout);

}  // namespace moe

#endif  // MOE_ROUTER_EXPERT_CONNECTION_H_
