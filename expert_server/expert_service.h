// gRPC adapter of the expert server: converts RunExperts requests into
// ExpertWork for the ExpertEngine and completes the reactor when the engine
// is done. Never blocks inside a callback.
//
// The NCCL data plane (core/nccl_data_plane.h), with --data_plane=nccl: a
// router joins a communicator with JoinDataPlane (the join runs on its own
// thread), and then sends requests whose rows travel over it
// (RunExpertsRequest.nccl). Such a request is checked like any other, and
// its serve step (receive the rows, compute them on the CUDA backend, send
// the outputs) runs on the engine's executor thread in the order the
// requests arrived, which is the order the router posted its NCCL
// operations in. A failed serve step aborts the link; later NCCL requests
// are refused with FAILED_PRECONDITION until a router joins again.
#ifndef MOE_EXPERT_SERVER_EXPERT_SERVICE_H_
#define MOE_EXPERT_SERVER_EXPERT_SERVICE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/backends.h"
#include "core/nccl_data_plane.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/expert_engine.h"
#include "expert_server/expert_metrics.h"
#include "moe/v1/expert.grpc.pb.h"

namespace moe {

// A RunExperts request checked and converted for the engine. `work[i].x`
// points into the request's tensor bytes or into `inputs` (aligned copies),
// so both must outlive the work; `work[i].out` is left null.
struct DecodedExpertRequest {
  std::vector<F32Rows> inputs;
  std::vector<ExpertWork> work;
};

// Decodes each group's hidden tensor (F32 [tokens, hidden size]) and checks
// that `engine` hosts each group's (layer, expert). INVALID_ARGUMENT naming
// the group otherwise.
absl::StatusOr<DecodedExpertRequest> DecodeRunExpertsRequest(
    const v1::RunExpertsRequest& request, const ExpertEngine& engine);

// The groups of a request whose rows travel over NCCL: each hidden must be
// F32 [tokens, hidden size] without bytes, and `engine` must host each
// group's (layer, expert). The work's x and out are null. INVALID_ARGUMENT
// naming the group otherwise.
absl::StatusOr<std::vector<ExpertWork>> DecodeNcclExpertRequest(
    const v1::RunExpertsRequest& request, const ExpertEngine& engine);

class ExpertServiceImpl final : public v1::ExpertService::CallbackService {
 public:
  // `engine` and `metrics` are borrowed and must outlive the service. With
  // `data_plane` kNccl, routers may join an NCCL communicator on `device`
  // (the engine's CUDA device); otherwise JoinDataPlane is refused.
  ExpertServiceImpl(ExpertEngine* engine, ExpertMetrics* metrics,
                    DataPlane data_plane = DataPlane::kGrpc,
                    DeviceSpec device = DeviceSpec())
      : engine_(engine),
        metrics_(metrics),
        data_plane_(data_plane),
        device_(device) {}
  // Whether AttachSharedMemory is served (it is by default), and how long
  // a channel's thread spins for the next request before it sleeps. Call
  // before the server starts.
  void ConfigureSharedMemory(bool accept, absl::Duration spin) {
    accept_shared_memory_ = accept;
    shared_memory_spin_ = spin;
  }
  // Waits for joins in progress (each ends by its timeout or its call's
  // cancellation) and aborts any serve step still waiting for its router.
  ~ExpertServiceImpl() override;

  grpc::ServerUnaryReactor* RunExperts(
      grpc::CallbackServerContext* context,
      const v1::RunExpertsRequest* request,
      v1::RunExpertsResponse* response) override;

  grpc::ServerBidiReactor<v1::RunExpertsRequest, v1::RunExpertsResponse>*
  ExpertStream(grpc::CallbackServerContext* context) override;

  grpc::ServerUnaryReactor* GetPlacement(
      grpc::CallbackServerContext* context,
      const v1::GetPlacementRequest* request,
      v1::Placement* response) override;

  grpc::ServerUnaryReactor* JoinDataPlane(
      grpc::CallbackServerContext* context,
      const v1::JoinDataPlaneRequest* request,
      v1::JoinDataPlaneResponse* response) override;
  // Serves a same-host client's shared-memory segment
  // (expert_server/shm_expert_channel.h) with the same Process as
  // ExpertStream.
  grpc::ServerWriteReactor<v1::SharedMemoryEvent>* AttachSharedMemory(
      grpc::CallbackServerContext* context,
      const v1::AttachSharedMemoryRequest* request) override;
  // The load runs on its own thread (it reads the checkpoint), so no
  // callback thread waits on the disk.
  grpc::ServerUnaryReactor* LoadExperts(
      grpc::CallbackServerContext* context,
      const v1::ChangeExpertsRequest* request,
      v1::ChangeExpertsResponse* response) override;
  grpc::ServerUnaryReactor* UnloadExperts(
      grpc::CallbackServerContext* context,
      const v1::ChangeExpertsRequest* request,
      v1::ChangeExpertsResponse* response) override;

 private:
  // Answers a Load/UnloadExperts call: the change's error, or how many
  // pairs changed, what is hosted now and how long it took (also exported
  // as moe_expert_hosted_experts).
  void FinishChange(absl::StatusOr<int> changed, absl::Time start,
                    v1::ChangeExpertsResponse* response,
                    grpc::ServerUnaryReactor* reactor);

  // The link a router joined. The communicator is used by one serve step at
  // a time, on the engine's executor thread; serve steps hold the link, so
  // a replaced link lives until its last one ends.
  struct NcclLink {
    uint64_t id = 0;
    std::unique_ptr<NcclCommunicator> communicator;
    // Set when the link is replaced or the service ends: a serve step
    // waiting for its router gives up.
    std::atomic<bool> closing{false};
    uint64_t next_sequence = 1;  // guarded by the service's mu_
  };

  // Validates `request` and queues its groups on the engine; `done` runs
  // once `response` holds every output (or with the error). `request` and
  // `response` must stay valid until then.
  void Process(const v1::RunExpertsRequest& request,
               v1::RunExpertsResponse* response,
               std::function<void(absl::Status)> done);
  // Process for a request whose rows travel over NCCL.
  void ProcessNccl(const v1::RunExpertsRequest& request,
                   v1::RunExpertsResponse* response,
                   std::function<void(absl::Status)> done);

  ExpertEngine* engine_;
  ExpertMetrics* metrics_;
  const DataPlane data_plane_;
  const DeviceSpec device_;
  bool accept_shared_memory_ = true;
  absl::Duration shared_memory_spin_ = absl::Microseconds(10);
  absl::Mutex mu_;
  std::shared_ptr<NcclLink> link_ ABSL_GUARDED_BY(mu_);  // null: none
  std::vector<std::thread> joins_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVER_EXPERT_SERVICE_H_
