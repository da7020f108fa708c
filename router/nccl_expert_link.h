// The router's NCCL data plane to one expert server (core/nccl_data_plane.h):
// a two-rank communicator (the router rank 0, the server rank 1) over which
// the groups' rows of each call go as BF16, while the call itself, with the
// groups' shapes only (RunExpertsRequest.nccl set), still goes on the
// server's ExpertStream and its answer says whether the server computed
// them.
//
// Ordering: NCCL pairs sends and receives in the order they are posted, so
// the link runs its calls one at a time on its own thread (which is also
// the only thread that touches the communicator): for call N it sends the
// control message on the stream, then posts its send and receive, waits for
// both and for the server's answer, and only then starts call N + 1. The
// server posts its operations in the order the control messages arrive,
// which is this order, and checks their sequence numbers.
//
// Failures: when an exchange fails (its deadline passed, NCCL reported an
// error, or the server refused or never got the control message while the
// rows were waiting) the communicator is aborted and the call fails with
// UNAVAILABLE naming the server (or with the server's INVALID_ARGUMENT,
// which means the router built a bad request). The link is then broken for
// good: `on_broken` runs once, and this and every later call go in the
// requests as gRPC bytes again.
#ifndef MOE_ROUTER_NCCL_EXPERT_LINK_H_
#define MOE_ROUTER_NCCL_EXPERT_LINK_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/backends.h"
#include "core/nccl_data_plane.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe {

// Thread-safe.
class NcclExpertLink {
 public:
  // As ExpertConnection::Done.
  using Done = std::function<void(
      absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>>)>;
  // Puts `request` on the server's ExpertStream (ExpertConnection).
  using SendFn = std::function<void(
      std::unique_ptr<v1::RunExpertsRequest> request,
      std::chrono::system_clock::time_point deadline, Done done)>;

  // Bootstraps the link to the server behind `stub`: creates an NCCL unique
  // id, calls ExpertService.JoinDataPlane with it (the server joins as rank
  // 1) and joins as rank 0 on `device` at the same time; returns once both
  // joined. `peer` names the server in errors ("expert server 1
  // (127.0.0.1:5001)"); `hidden` is the model's hidden size. Errors name the
  // server: the server's own refusal (FAILED_PRECONDITION when it cannot use
  // NCCL), UNAVAILABLE when it cannot be reached, DEADLINE_EXCEEDED after
  // `timeout_seconds`, and CheckNcclUsable's error for this side.
  static absl::StatusOr<std::unique_ptr<NcclExpertLink>> Join(
      v1::ExpertService::Stub& stub, std::string peer, const DeviceSpec& device,
      int64_t hidden, double timeout_seconds);

  // A link over an already joined `communicator` (rank 0 of 2; tests give a
  // fake one). `link_id` is the id the server knows the link by.
  NcclExpertLink(std::unique_ptr<NcclCommunicator> communicator,
                 uint64_t link_id, std::string peer, int64_t hidden);
  // Fails the calls still queued with UNAVAILABLE (an exchange in progress
  // is aborted) and stops the link's thread.
  ~NcclExpertLink();

  // Starts the link's thread. `send` carries the control messages and, once
  // the link is broken, the calls themselves; `on_broken` runs once, on the
  // link's thread, with the reason when the link breaks. Call once, before
  // Call.
  void Start(SendFn send, std::function<void(const absl::Status&)> on_broken);

  // False once the link broke.
  bool usable() const { return !broken_.load(); }
  uint64_t link_id() const { return link_id_; }

  // Queues a call whose groups carry their rows in hidden.data (as for the
  // gRPC path, which is what a broken link falls back to) and runs `done`
  // once, on the link's thread or a gRPC thread, with the answer: the
  // outputs as F32 tensors with their bytes, as over gRPC.
  void Call(std::unique_ptr<v1::RunExpertsRequest> request,
            std::chrono::system_clock::time_point deadline, Done done);

 private:
  struct Job {
    std::unique_ptr<v1::RunExpertsRequest> request;
    std::chrono::system_clock::time_point deadline;
    Done done;
  };

  void Loop();
  bool HasJobOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One call over NCCL; link thread only.
  void Exchange(Job job);
  void Break(const absl::Status& why);

  const std::unique_ptr<NcclCommunicator> communicator_;  // link thread only
  const uint64_t link_id_;
  const std::string peer_;
  const int64_t hidden_;
  uint64_t sequence_ = 0;  // of the last exchange; link thread only
  SendFn send_;
  std::function<void(const absl::Status&)> on_broken_;
  std::atomic<bool> broken_{false};
  std::atomic<bool> stopping_{false};
  absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace moe

#endif  // MOE_ROUTER_NCCL_EXPERT_LINK_H_
