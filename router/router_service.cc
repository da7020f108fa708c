#include "router/router_service.h"

#include <chrono>
#include <memory>

#include "core/rpc/call_stream_reactor.h"
#include "core/rpc/grpc_status.h"

namespace moe {

grpc::ServerUnaryReactor* RouterServiceImpl::RunMoe(
    grpc::CallbackServerContext* context, const v1::RunMoeRequest* request,
    v1::RunMoeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  dispatcher_->Dispatch(*request, context->deadline(), response,
                        [reactor](absl::Status status) {
                          reactor->Finish(ToGrpcStatus(status));
                        });
  return reactor;
}

grpc::ServerBidiReactor<v1::RunMoeRequest, v1::RunMoeResponse>*
RouterServiceImpl::MoeStream(grpc::CallbackServerContext* context) {
  using Reactor = CallStreamReactor<v1::RunMoeRequest, v1::RunMoeResponse>;
  return Reactor::Start([this](std::unique_ptr<v1::RunMoeRequest> request,
                               Reactor::Reply reply) {
    std::shared_ptr<v1::RunMoeRequest> in(std::move(request));
    auto out = std::make_shared<v1::RunMoeResponse>();
    out->set_call_id(in->call_id());
    dispatcher_->Dispatch(
        *in, std::chrono::system_clock::time_point::max(), out.get(),
        [in, out, reply](absl::Status status) {
          if (!status.ok()) {
            out->clear_output();
            out->set_error_code(static_cast<int>(status.code()));
            out->set_error_message(std::string(status.message()));
          }
          reply(std::make_unique<v1::RunMoeResponse>(std::move(*out)));
        });
  });
}

grpc::ServerUnaryReactor* RouterServiceImpl::GetStats(
    grpc::CallbackServerContext* context,
    const v1::GetRouterStatsRequest* /*request*/, v1::RouterStats* response) {
  const RouterTotals totals = dispatcher_->engine().Totals();
  const ModelConfig& config = dispatcher_->engine().config();
  response->set_batches(totals.batches);
  for (const LayerDispatchStats& layer : totals.layers) {
    if (!config.IsMoeLayer(layer.layer)) continue;
    v1::LayerDispatchCounts* out = response->add_layers();
    out->set_layer(layer.layer);
    out->set_slots(layer.slots);
    for (size_t e = 0; e < layer.experts.size(); ++e) {
      const ExpertDispatchStats& in = layer.experts[e];
      v1::ExpertDispatchCounts* counts = out->add_experts();
      counts->set_expert(static_cast<int32_t>(e));
      counts->set_tokens(in.tokens);
      counts->set_overflowed(in.overflowed);
      counts->set_rerouted(in.rerouted);
      counts->set_dropped(in.dropped);
      counts->set_rerouted_in(in.rerouted_in);
    }
  }
  for (size_t s = 0; s < totals.server_slots.size(); ++s) {
    v1::ExpertServerCounts* server = response->add_servers();
    server->set_server(static_cast<int32_t>(s));
    server->set_address(dispatcher_->connection(static_cast<int>(s)).address());
    server->set_slots(totals.server_slots[s]);
    server->set_calls(totals.server_calls[s]);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moe
