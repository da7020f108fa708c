#include "expert_server/expert_service.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/rpc/grpc_status.h"
#include "core/rpc/tensor_codec.h"

namespace moe {

grpc::ServerUnaryReactor* ExpertServiceImpl::RunExperts(
    grpc::CallbackServerContext* context, const v1::RunExpertsRequest* request,
    v1::RunExpertsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const int64_t hidden = engine_->config().hidden_size;

  // Decoded inputs stay alive (with any aligned copies) until the engine is
  // done; the request and response outlive the reactor's Finish.
  auto inputs = std::make_shared<std::vector<F32Rows>>();
  inputs->reserve(request->groups_size());
  std::vector<ExpertWork> work;
  work.reserve(request->groups_size());
  for (int i = 0; i < request->groups_size(); ++i) {
    const v1::ExpertGroup& group = request->groups(i);
    absl::StatusOr<F32Rows> rows = DecodeF32Rows(
        group.hidden(), hidden, absl::StrCat("groups[", i, "].hidden"));
    if (!rows.ok()) {
      reactor->Finish(ToGrpcStatus(rows.status()));
      return reactor;
    }
    inputs->push_back(*std::move(rows));
    work.push_back({group.layer(), group.expert(), inputs->back().data,
                    inputs->back().rows, nullptr});
  }
  if (absl::Status valid = engine_->Validate(work); !valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  // Output tensors are allocated in the response and written in place.
  for (ExpertWork& w : work) {
    v1::Tensor* out = response->add_outputs();
    out->set_dtype(v1::DTYPE_F32);
    out->add_shape(w.tokens);
    out->add_shape(hidden);
    std::string* data = out->mutable_data();
    data->resize(static_cast<size_t>(w.tokens * hidden) * sizeof(float));
    w.out = reinterpret_cast<float*>(data->data());
  }
  engine_->Submit(std::move(work), [reactor, inputs, response](
                                       absl::Status status, double seconds) {
    response->set_compute_seconds(seconds);
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ExpertServiceImpl::GetPlacement(
    grpc::CallbackServerContext* context,
    const v1::GetPlacementRequest* /*request*/, v1::Placement* response) {
  for (const auto& [layer, expert] : engine_->HostedExperts()) {
    v1::ExpertId* id = response->add_experts();
    id->set_layer(layer);
    id->set_expert(expert);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moe
