// gRPC adapter of the expert server: converts RunExperts requests into
// ExpertWork for the ExpertEngine and completes the reactor when the engine
// is done. Never blocks inside a callback.
#ifndef MOE_EXPERT_SERVER_EXPERT_SERVICE_H_
#define MOE_EXPERT_SERVER_EXPERT_SERVICE_H_

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
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

class ExpertServiceImpl final : public v1::ExpertService::CallbackService {
 public:
  // `engine` and `metrics` are borrowed and must outlive the service.
  ExpertServiceImpl(ExpertEngine* engine, ExpertMetrics* metrics)
      : engine_(engine), metrics_(metrics) {}

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

 private:
  // Validates `request` and queues its groups on the engine; `done` runs
  // once `response` holds every output (or with the error). `request` and
  // `response` must stay valid until then.
  void Process(const v1::RunExpertsRequest& request,
               v1::RunExpertsResponse* response,
               std::function<void(absl::Status)> done);

  ExpertEngine* engine_;
  ExpertMetrics* metrics_;
};

}  // namespace moe

#endif  // MOE_EXPERT_SERVER_EXPERT_SERVICE_H_
