// The expert server's side of the same-host transport
// (core/rpc/shm_segment.h): a thread per attached client that waits on the
// segment's request event, takes posted slots oldest first, hands each
// request to the service (the same Process as ExpertStream) and writes the
// answer back into its slot, waking the client's receiver directly.
//
// With pinned compute threads the channel's thread pins itself like the
// engine's executor and computes a batch itself when the engine is idle,
// so a call costs no hand-off inside the server either.
#ifndef MOE_EXPERT_SERVER_SHM_EXPERT_CHANNEL_H_
#define MOE_EXPERT_SERVER_SHM_EXPERT_CHANNEL_H_

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/rpc/shm_segment.h"
#include "grpcpp/support/server_callback.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe {

class ShmExpertChannel {
 public:
  // Runs one request; `done` runs once `response` is complete (or with the
  // error), on any thread. `request` and `response` stay valid until then.
  using Handler = std::function<void(const v1::RunExpertsRequest& request,
                                     v1::RunExpertsResponse* response,
                                     std::function<void(absl::Status)> done)>;

  // Starts the thread; `on_start` runs first on it (the engine pins it).
  // `spin` is how long the thread spins for a request before it sleeps.
  ShmExpertChannel(std::shared_ptr<ShmSegment> segment, Handler handler,
                   std::function<void()> on_start, absl::Duration spin);
  // Stop().
  ~ShmExpertChannel();
  ShmExpertChannel(const ShmExpertChannel&) = delete;
  ShmExpertChannel& operator=(const ShmExpertChannel&) = delete;

  // Stops taking requests and joins the thread. Requests already handed
  // over are still answered into the segment, which they keep mapped.
  // Idempotent.
  void Stop();

 private:
  void Loop();
  // Takes slot `i` (posted with a request) and hands it to the handler.
  void Serve(int i);

  const std::shared_ptr<ShmSegment> segment_;
  const Handler handler_;
  const std::function<void()> on_start_;
  const absl::Duration spin_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// The reactor for ExpertService.AttachSharedMemory: opens the named
// segment, starts a channel that runs requests with `handler`, writes the
// one SharedMemoryEvent and keeps the call open until the client ends it
// or the server shuts down (then the channel stops). Refuses with the
// segment's error (NOT_FOUND, INVALID_ARGUMENT) or, when `accept` is
// false, FAILED_PRECONDITION.
grpc::ServerWriteReactor<v1::SharedMemoryEvent>* StartShmAttach(
    const v1::AttachSharedMemoryRequest& request, bool accept,
    ShmExpertChannel::Handler handler, std::function<void()> on_start,
    absl::Duration spin);

}  // namespace moe

#endif  // MOE_EXPERT_SERVER_SHM_EXPERT_CHANNEL_H_
