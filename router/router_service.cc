#include "router/router_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/rpc/grpc_status.h"
#include "core/rpc/tensor_codec.h"

namespace moe {
namespace {

// State of one RunMoe call, shared by the expert-call callbacks; the last
// callback to finish combines and completes the reactor.
struct FanOut {
  grpc::ServerUnaryReactor* reactor = nullptr;
  v1::RunMoeResponse* response = nullptr;
  RouterEngine* engine = nullptr;
  const std::vector<std::string>* addresses = nullptr;
  DispatchPlan plan;
  std::vector<int> servers;  // server ids called, parallel to the vectors below
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<v1::RunExpertsRequest> requests;
  std::vector<v1::RunExpertsResponse> responses;
  std::atomic<int> pending{0};
  absl::Mutex mu;
  absl::Status first_error ABSL_GUARDED_BY(mu);

  void OnExpertDone(size_t index, const grpc::Status& status) {
    if (!status.ok()) {
      absl::MutexLock lock(&mu);
      if (first_error.ok()) {
        const int server = servers[index];
        absl::Status s = FromGrpcStatus(status);
        const absl::StatusCode code =
            s.code() == absl::StatusCode::kInvalidArgument
                ? absl::StatusCode::kInternal
                : absl::StatusCode::kUnavailable;
        first_error = absl::Status(
            code,
            absl::StrCat("expert server ", server, " (", (*addresses)[server],
                         ") failed layer ", plan.layer, ": ", s.message()));
      }
    }
    if (pending.fetch_sub(1) == 1) Complete();
  }

  void Complete() {
    engine->Release(plan);
    absl::Status error;
    {
      absl::MutexLock lock(&mu);
      error = first_error;
    }
    if (error.ok()) error = Combine();
    reactor->Finish(ToGrpcStatus(error));
  }

  absl::Status Combine() {
    const int64_t hidden = engine->config().hidden_size;
    std::vector<std::vector<const float*>> outputs(plan.servers.size());
    // Decoded outputs keep any aligned copies alive until the combine ends.
    std::vector<F32Rows> decoded;
    decoded.reserve(plan.tokens * plan.k + 1);
    for (size_t i = 0; i < servers.size(); ++i) {
      const int s = servers[i];
      const std::vector<ExpertGroup>& groups = plan.servers[s].groups;
      if (responses[i].outputs_size() != static_cast<int>(groups.size())) {
        return absl::InternalError(absl::StrCat(
            "expert server ", s, " returned ", responses[i].outputs_size(),
            " outputs for ", groups.size(), " groups"));
      }
      for (size_t g = 0; g < groups.size(); ++g) {
        absl::StatusOr<F32Rows> rows =
            DecodeF32Rows(responses[i].outputs(g), hidden,
                          absl::StrCat("expert server ", s, " output ", g));
        if (!rows.ok()) return absl::InternalError(rows.status().message());
        if (rows->rows != static_cast<int64_t>(groups[g].tokens.size())) {
          return absl::InternalError(absl::StrCat(
              "expert server ", s, " output ", g, " has ", rows->rows,
              " rows, expected ", groups[g].tokens.size()));
        }
        decoded.push_back(*std::move(rows));
        outputs[s].push_back(decoded.back().data);
      }
    }
    v1::Tensor* out = response->mutable_output();
    out->set_dtype(v1::DTYPE_F32);
    out->add_shape(plan.tokens);
    out->add_shape(hidden);
    std::string* data = out->mutable_data();
    data->resize(static_cast<size_t>(plan.tokens * hidden) * sizeof(float));
    engine->Combine(plan, outputs, reinterpret_cast<float*>(data->data()));
    response->set_rerouted_slots(static_cast<int32_t>(plan.stats.rerouted()));
    response->set_dropped_slots(static_cast<int32_t>(plan.stats.dropped()));
    return absl::OkStatus();
  }
};

}  // namespace

RouterServiceImpl::RouterServiceImpl(
    RouterEngine* engine,
    std::vector<std::unique_ptr<v1::ExpertService::Stub>> expert_stubs,
    std::vector<std::string> expert_addresses, double fanout_timeout_seconds)
    : engine_(engine),
      stubs_(std::move(expert_stubs)),
      addresses_(std::move(expert_addresses)),
      fanout_timeout_seconds_(fanout_timeout_seconds) {}

grpc::ServerUnaryReactor* RouterServiceImpl::RunMoe(
    grpc::CallbackServerContext* context, const v1::RunMoeRequest* request,
    v1::RunMoeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const int64_t hidden = engine_->config().hidden_size;
  absl::StatusOr<F32Rows> x =
      DecodeF32Rows(request->hidden(), hidden, "hidden");
  if (!x.ok()) {
    reactor->Finish(ToGrpcStatus(x.status()));
    return reactor;
  }
  absl::StatusOr<DispatchPlan> plan =
      engine_->Plan(request->layer(), x->data, x->rows);
  if (!plan.ok()) {
    reactor->Finish(ToGrpcStatus(plan.status()));
    return reactor;
  }

  auto fan = std::make_shared<FanOut>();
  fan->reactor = reactor;
  fan->response = response;
  fan->engine = engine_;
  fan->addresses = &addresses_;
  fan->plan = *std::move(plan);
  for (size_t s = 0; s < fan->plan.servers.size(); ++s) {
    if (!fan->plan.servers[s].groups.empty()) fan->servers.push_back(s);
  }
  if (fan->servers.empty()) {  // no tokens, or every slot dropped
    fan->pending = 1;
    fan->OnExpertDone(0, grpc::Status::OK);
    return reactor;
  }
  // Requests: each group's rows gathered straight into its tensor bytes.
  fan->requests.resize(fan->servers.size());
  fan->responses.resize(fan->servers.size());
  for (size_t i = 0; i < fan->servers.size(); ++i) {
    for (const ExpertGroup& group : fan->plan.servers[fan->servers[i]].groups) {
      v1::ExpertGroup* g = fan->requests[i].add_groups();
      g->set_layer(fan->plan.layer);
      g->set_expert(group.expert);
      v1::Tensor* t = g->mutable_hidden();
      t->set_dtype(v1::DTYPE_F32);
      t->add_shape(static_cast<int64_t>(group.tokens.size()));
      t->add_shape(hidden);
      std::string* data = t->mutable_data();
      data->resize(group.tokens.size() * hidden * sizeof(float));
      float* dst = reinterpret_cast<float*>(data->data());
      for (size_t r = 0; r < group.tokens.size(); ++r) {
        std::copy(x->data + group.tokens[r] * hidden,
                  x->data + (group.tokens[r] + 1) * hidden, dst + r * hidden);
      }
    }
  }
  const auto deadline = std::min(
      context->deadline(), std::chrono::system_clock::now() +
                               std::chrono::microseconds(static_cast<int64_t>(
                                   fanout_timeout_seconds_ * 1e6)));
  fan->pending = static_cast<int>(fan->servers.size());
  for (size_t i = 0; i < fan->servers.size(); ++i) {
    fan->contexts.push_back(std::make_unique<grpc::ClientContext>());
    fan->contexts.back()->set_deadline(deadline);
  }
  for (size_t i = 0; i < fan->servers.size(); ++i) {
    stubs_[fan->servers[i]]->async()->RunExperts(
        fan->contexts[i].get(), &fan->requests[i], &fan->responses[i],
        [fan, i](grpc::Status status) { fan->OnExpertDone(i, status); });
  }
  return reactor;
}

grpc::ServerUnaryReactor* RouterServiceImpl::GetStats(
    grpc::CallbackServerContext* context,
    const v1::GetRouterStatsRequest* /*request*/, v1::RouterStats* response) {
  const RouterTotals totals = engine_->Totals();
  const ModelConfig& config = engine_->config();
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
    server->set_address(addresses_[s]);
    server->set_slots(totals.server_slots[s]);
    server->set_calls(totals.server_calls[s]);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moe
