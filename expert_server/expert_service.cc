#include "expert_server/expert_service.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/rpc/call_stream_reactor.h"
#include "core/rpc/grpc_status.h"
#include "core/rpc/tensor_codec.h"

namespace moe {

absl::StatusOr<DecodedExpertRequest> DecodeRunExpertsRequest(
    const v1::RunExpertsRequest& request, const ExpertEngine& engine) {
  const int64_t hidden = engine.config().hidden_size;
  DecodedExpertRequest out;
  // Reserved up front: `work` points into `inputs`' aligned copies.
  out.inputs.reserve(request.groups_size());
  out.work.reserve(request.groups_size());
  for (int i = 0; i < request.groups_size(); ++i) {
    const v1::ExpertGroup& group = request.groups(i);
    absl::StatusOr<F32Rows> rows = DecodeF32Rows(
        group.hidden(), hidden, absl::StrCat("groups[", i, "].hidden"));
    if (!rows.ok()) return rows.status();
    out.inputs.push_back(*std::move(rows));
    out.work.push_back({group.layer(), group.expert(), out.inputs.back().data,
                        out.inputs.back().rows, nullptr});
  }
  if (absl::Status valid = engine.Validate(out.work); !valid.ok()) {
    return valid;
  }
  return out;
}

void ExpertServiceImpl::Process(const v1::RunExpertsRequest& request,
                                v1::RunExpertsResponse* response,
                                std::function<void(absl::Status)> done) {
  const int64_t hidden = engine_->config().hidden_size;
  absl::StatusOr<DecodedExpertRequest> decoded =
      DecodeRunExpertsRequest(request, *engine_);
  if (!decoded.ok()) {
    done(decoded.status());
    return;
  }
  // Decoded inputs stay alive (with any aligned copies) until the engine is
  // done; the request and response outlive `done`.
  auto inputs =
      std::make_shared<std::vector<F32Rows>>(std::move(decoded->inputs));
  std::vector<ExpertWork> work = std::move(decoded->work);
  // Output tensors are allocated in the response and written in place.
  int64_t bytes_in = 0;
  int64_t bytes_out = 0;
  for (const v1::ExpertGroup& group : request.groups()) {
    bytes_in += static_cast<int64_t>(group.hidden().data().size());
  }
  for (ExpertWork& w : work) {
    v1::Tensor* out = response->add_outputs();
    out->set_dtype(v1::DTYPE_F32);
    out->add_shape(w.tokens);
    out->add_shape(hidden);
    std::string* data = out->mutable_data();
    data->resize(static_cast<size_t>(w.tokens * hidden) * sizeof(float));
    w.out = reinterpret_cast<float*>(data->data());
    bytes_out += static_cast<int64_t>(data->size());
  }
  std::vector<ExpertWork> recorded = work;  // for the metrics; no pointers used
  engine_->Submit(
      std::move(work),
      [this, inputs, response, recorded = std::move(recorded), bytes_in,
       bytes_out, done = std::move(done)](absl::Status status, double seconds) {
        response->set_compute_seconds(seconds);
        if (status.ok()) {
          metrics_->RecordCall(recorded, bytes_in, bytes_out, seconds);
        }
        done(std::move(status));
      });
}

grpc::ServerUnaryReactor* ExpertServiceImpl::RunExperts(
    grpc::CallbackServerContext* context, const v1::RunExpertsRequest* request,
    v1::RunExpertsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Process(*request, response, [reactor](absl::Status status) {
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerBidiReactor<v1::RunExpertsRequest, v1::RunExpertsResponse>*
ExpertServiceImpl::ExpertStream(grpc::CallbackServerContext* context) {
  using Reactor =
      CallStreamReactor<v1::RunExpertsRequest, v1::RunExpertsResponse>;
  return Reactor::Start([this](std::unique_ptr<v1::RunExpertsRequest> request,
                               Reactor::Reply reply) {
    auto response = std::make_unique<v1::RunExpertsResponse>();
    response->set_call_id(request->call_id());
    v1::RunExpertsResponse* out = response.get();
    const v1::RunExpertsRequest& in = *request;
    Process(in, out,
            [request = std::shared_ptr<v1::RunExpertsRequest>(std::move(request)),
             response = std::shared_ptr<v1::RunExpertsResponse>(
                 std::move(response)),
             reply](absl::Status status) mutable {
              if (!status.ok()) {
                response->clear_outputs();
                response->set_error_code(static_cast<int>(status.code()));
                response->set_error_message(std::string(status.message()));
              }
              reply(std::make_unique<v1::RunExpertsResponse>(
                  std::move(*response)));
            });
  });
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
