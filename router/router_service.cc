#include "router/router_service.h"

#include <chrono>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/rpc/call_stream_reactor.h"
#include "core/rpc/grpc_status.h"
#include "core/rpc/tensor_codec.h"
#include "router/dispatch_config.h"

namespace moe {
namespace {

// A batch refused as INVALID_ARGUMENT because of a non-finite hidden state
// (the gate's logits then are not finite either) is refused naming the
// element of `hidden`, the field the caller has to fix. Looked at only on
// failure, so valid batches pay nothing.
absl::Status NameNonFiniteHidden(const v1::RunMoeRequest& request,
                                 int64_t hidden_size, absl::Status status) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return status;
  absl::StatusOr<F32Rows> x =
      DecodeF32Rows(request.hidden(), hidden_size, "hidden");
  if (!x.ok()) return status;
  for (int64_t i = 0; i < x->rows * x->cols; ++i) {
    if (!std::isfinite(x->data[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "hidden: element [", i / x->cols, ", ", i % x->cols,
          "] is not finite (", x->data[i], ")"));
    }
  }
  return status;
}

}  // namespace

grpc::ServerUnaryReactor* RouterServiceImpl::RunMoe(
    grpc::CallbackServerContext* context, const v1::RunMoeRequest* request,
    v1::RunMoeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const int64_t hidden = dispatcher_->engine().config().hidden_size;
  dispatcher_->Dispatch(
      *request, context->deadline(), response,
      [reactor, request, hidden](absl::Status status) {
        reactor->Finish(ToGrpcStatus(
            NameNonFiniteHidden(*request, hidden, std::move(status))));
      });
  return reactor;
}

grpc::ServerBidiReactor<v1::RunMoeRequest, v1::RunMoeResponse>*
RouterServiceImpl::MoeStream(grpc::CallbackServerContext* context) {
  using Reactor = CallStreamReactor<v1::RunMoeRequest, v1::RunMoeResponse>;
  const int64_t hidden = dispatcher_->engine().config().hidden_size;
  return Reactor::Start([this, hidden](std::unique_ptr<v1::RunMoeRequest> request,
                                       Reactor::Reply reply) {
    std::shared_ptr<v1::RunMoeRequest> in(std::move(request));
    auto out = std::make_shared<v1::RunMoeResponse>();
    out->set_call_id(in->call_id());
    dispatcher_->Dispatch(
        *in, std::chrono::system_clock::time_point::max(), out.get(),
        [in, out, reply, hidden](absl::Status status) {
          status = NameNonFiniteHidden(*in, hidden, std::move(status));
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
  const std::shared_ptr<const PlacementTable> placement =
      dispatcher_->engine().placement();
  for (size_t s = 0; s < totals.server_slots.size(); ++s) {
    v1::ExpertServerCounts* server = response->add_servers();
    server->set_server(static_cast<int32_t>(s));
    server->set_address(dispatcher_->connection(static_cast<int>(s)).address());
    server->set_slots(totals.server_slots[s]);
    server->set_calls(totals.server_calls[s]);
    server->set_up(dispatcher_->health().IsUp(static_cast<int>(s)));
    for (const LayerExpert& id : placement->ExpertsOn(static_cast<int>(s))) {
      v1::ExpertId* out = server->add_experts();
      out->set_layer(id.layer);
      out->set_expert(id.expert);
    }
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RouterServiceImpl::GetDispatchConfig(
    grpc::CallbackServerContext* context,
    const v1::GetDispatchConfigRequest* request,
    v1::DispatchConfig* response) {
  *response = DescribeDispatch(*dispatcher_);
  // From now on a rebalance waits for this follower's acknowledgement
  // before it unloads what the copied placement may still use.
  if (!request->follower().empty()) {
    followers_->Register(request->follower(), response->placement_version());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RouterServiceImpl::WatchPlacement(
    grpc::CallbackServerContext* context,
    const v1::WatchPlacementRequest* request, v1::PlacementUpdate* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  followers_->Watch(*request, response, reactor);
  return reactor;
}

RouterServiceImpl::~RouterServiceImpl() {
  std::vector<std::thread> running;
  {
    absl::MutexLock lock(&mu_);
    running.swap(rebalances_);
  }
  for (std::thread& t : running) t.join();
}

grpc::ServerUnaryReactor* RouterServiceImpl::Rebalance(
    grpc::CallbackServerContext* context, const v1::RebalanceRequest* request,
    v1::RebalanceResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const bool force = request->force();
  absl::MutexLock lock(&mu_);
  rebalances_.emplace_back([this, reactor, response, force] {
    absl::StatusOr<RebalanceResult> result = rebalancer_->Rebalance(force);
    if (!result.ok()) {
      reactor->Finish(ToGrpcStatus(result.status()));
      return;
    }
    response->set_applied(result->applied);
    response->set_reason(result->reason);
    response->set_imbalance_before(result->imbalance_before);
    response->set_imbalance_after(result->imbalance_after);
    response->set_window_tokens(result->window_tokens);
    response->set_loaded(result->loaded);
    response->set_unloaded(result->unloaded);
    response->set_seconds(result->seconds);
    response->set_policy(result->policy);
    response->set_window_seconds(result->window_seconds);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace moe
