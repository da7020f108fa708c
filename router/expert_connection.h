// The router's link to one expert server: calls multiplexed over one
// long-lived ExpertService.ExpertStream, matched to their answers by
// call_id. Saves the per-call setup of unary RPCs on the hot path.
//
// Each call has a deadline; when it passes the call fails with
// DEADLINE_EXCEEDED and the stream is cancelled (a server that misses a
// deadline is treated as stuck), which fails every other call on it with
// UNAVAILABLE. The next call opens a new stream.
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

  // Sends `request` (its call_id is assigned here) and runs `done` once.
  // Errors: the server's own error for the request (its code), UNAVAILABLE
  // when the stream broke, DEADLINE_EXCEEDED past `deadline`.
  void Call(std::unique_ptr<v1::RunExpertsRequest> request,
            std::chrono::system_clock::time_point deadline, Done done);

 private:
  class Stream;

  const std::string address_;
  std::unique_ptr<v1::ExpertService::Stub> stub_;
  DeadlineWatchdog watchdog_;  // the calls' deadlines
  absl::Mutex mu_;
  std::shared_ptr<Stream> stream_ ABSL_GUARDED_BY(mu_);  // null: none open
  uint64_t next_call_id_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace moe

#endif  // MOE_ROUTER_EXPERT_CONNECTION_H_
