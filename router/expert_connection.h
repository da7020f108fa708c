// The router's link to one expert server: calls multiplexed over one
// long-lived ExpertService.ExpertStream, matched to their answers by
// call_id. Saves the per-call setup of unary RPCs on the hot path.
//
// Each call has a deadline; when it passes the call fails with
// DEADLINE_EXCEEDED and the stream is cancelled (a server that misses a
// deadline is treated as stuck), which fails every other call on it with
// UNAVAILABLE. The next call opens a new stream.
//
// With the NCCL data plane attached (AttachDataPlane) the groups' rows go
// GPU to GPU instead (router/nccl_expert_link.h) and the stream carries the
// calls' control messages; when that link breaks, calls go back to the
// stream with their rows.
#ifndef MOE_ROUTER_EXPERT_CONNECTION_H_
#define MOE_ROUTER_EXPERT_CONNECTION_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/deadline_watchdog.h"
#include "moe/v1/expert.grpc.pb.h"
#include "router/nccl_expert_link.h"

namespace moe {

// Thread-safe.
class ExpertConnection {
 public:
  // Receives the answer (owned by the callee) or the error. Runs on a gRPC
  // thread; inside Call only when no stream can be opened at all.
  using Done = std::function<void(
      absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>>)>;

  explicit ExpertConnection(std::string address);
  ~ExpertConnection();

  const std::string& address() const { return address_; }
  v1::ExpertService::Stub& stub() { return *stub_; }

  // Sends `request` (its call_id is assigned here) and runs `done` once.
  // Errors: the server's own error for the request (its code), UNAVAILABLE
  // when the stream broke, DEADLINE_EXCEEDED past `deadline`.
  void Call(std::unique_ptr<v1::RunExpertsRequest> request,
            std::chrono::system_clock::time_point deadline, Done done);

  // Sends the rows of later calls over `link` while it works; `on_broken`
  // runs once, with the reason, when it breaks (calls then go over the
  // stream with their rows again). Call at most once, before the first
  // Call.
  void AttachDataPlane(std::unique_ptr<NcclExpertLink> link,
                       std::function<void(const absl::Status&)> on_broken);
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

  const std::string address_;
  std::unique_ptr<v1::ExpertService::Stub> stub_;
  DeadlineWatchdog watchdog_;  // the calls' deadlines
  absl::Mutex mu_;
  std::shared_ptr<Stream> stream_ ABSL_GUARDED_BY(mu_);  // null: none open
  uint64_t next_call_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Set before the first call; destroyed before the stream (its thread
  // sends on it).
  std::unique_ptr<NcclExpertLink> data_plane_;
};

}  // namespace moe

#endif  // MOE_ROUTER_EXPERT_CONNECTION_H_
