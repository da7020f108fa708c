#include "router/moe_dispatcher.h"

#include <algorithm>
#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/rpc/tensor_codec.h"

namespace moe {
namespace {

// State of one dispatch, shared by the expert callbacks; the last one to
// finish combines and runs `done`.
struct FanOut {
  RouterEngine* engine = nullptr;
  RouterMetrics* metrics = nullptr;
  absl::Time start;
  v1::RunMoeResponse* response = nullptr;
  std::function<void(absl::Status)> done;
  DispatchPlan plan;
  std::vector<int> servers;  // server ids called, parallel to `outputs`
  std::vector<const ExpertConnection*> connections;
  std::vector<std::unique_ptr<v1::RunExpertsResponse>> outputs;
  std::atomic<int> pending{0};
  absl::Mutex mu;
  absl::Status first_error ABSL_GUARDED_BY(mu);

  void OnExpertDone(
      size_t index,
      absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>> answer) {
    metrics->RecordServerAnswer(servers[index], answer.status());
    if (answer.ok()) {
      outputs[index] = *std::move(answer);
    } else {
      absl::MutexLock lock(&mu);
      if (first_error.ok()) {
        const absl::Status& s = answer.status();
        // A group the router built wrong is its own bug, not the server's.
        const absl::StatusCode code =
            s.code() == absl::StatusCode::kInvalidArgument
                ? absl::StatusCode::kInternal
                : absl::StatusCode::kUnavailable;
        first_error = absl::Status(
            code, absl::StrCat("expert server ", servers[index], " (",
                               connections[index]->address(), ") failed layer ",
                               plan.layer, ": ", s.message()));
      }
    }
    if (pending.fetch_sub(1) == 1) Complete();
  }

  void Complete() {
    engine->Release(plan);
    if (!servers.empty()) {
      metrics->RecordFanOut(absl::ToDoubleSeconds(absl::Now() - start));
    }
    absl::Status error;
    {
      absl::MutexLock lock(&mu);
      error = first_error;
    }
    if (error.ok()) error = Combine();
    done(error);
  }

  absl::Status Combine() {
    const int64_t hidden = engine->config().hidden_size;
    std::vector<std::vector<const float*>> rows(plan.servers.size());
    // Decoded outputs keep any aligned copies alive until the combine ends.
    std::vector<F32Rows> decoded;
    for (size_t i = 0; i < servers.size(); ++i) {
      const int s = servers[i];
      const std::vector<ExpertGroup>& groups = plan.servers[s].groups;
      const v1::RunExpertsResponse& answer = *outputs[i];
      if (answer.outputs_size() != static_cast<int>(groups.size())) {
        return absl::InternalError(absl::StrCat(
            "expert server ", s, " returned ", answer.outputs_size(),
            " outputs for ", groups.size(), " groups"));
      }
      for (size_t g = 0; g < groups.size(); ++g) {
        absl::StatusOr<F32Rows> out =
            DecodeF32Rows(answer.outputs(g), hidden,
                          absl::StrCat("expert server ", s, " output ", g));
        if (!out.ok()) return absl::InternalError(out.status().message());
        if (out->rows != static_cast<int64_t>(groups[g].tokens.size())) {
          return absl::InternalError(absl::StrCat(
              "expert server ", s, " output ", g, " has ", out->rows,
              " rows, expected ", groups[g].tokens.size()));
        }
        rows[s].push_back(out->data);
        decoded.push_back(*std::move(out));
      }
    }
    v1::Tensor* out = response->mutable_output();
    out->set_dtype(v1::DTYPE_F32);
    out->clear_shape();
    out->add_shape(plan.tokens);
    out->add_shape(hidden);
    std::string* data = out->mutable_data();
    data->resize(static_cast<size_t>(plan.tokens * hidden) * sizeof(float));
    engine->Combine(plan, rows, reinterpret_cast<float*>(data->data()));
    response->set_rerouted_slots(static_cast<int32_t>(plan.stats.rerouted()));
    response->set_dropped_slots(static_cast<int32_t>(plan.stats.dropped()));
    return absl::OkStatus();
  }
};

// The request to one server: each group's rows gathered straight into its
// tensor bytes.
std::unique_ptr<v1::RunExpertsRequest> BuildRequest(const DispatchPlan& plan,
                                                    int server, const float* x,
                                                    int64_t hidden) {
  auto request = std::make_unique<v1::RunExpertsRequest>();
  for (const ExpertGroup& group : plan.servers[server].groups) {
    v1::ExpertGroup* g = request->add_groups();
    g->set_layer(plan.layer);
    g->set_expert(group.expert);
    v1::Tensor* t = g->mutable_hidden();
    t->set_dtype(v1::DTYPE_F32);
    t->add_shape(static_cast<int64_t>(group.tokens.size()));
    t->add_shape(hidden);
    std::string* data = t->mutable_data();
    data->resize(group.tokens.size() * hidden * sizeof(float));
    float* dst = reinterpret_cast<float*>(data->data());
    for (size_t r = 0; r < group.tokens.size(); ++r) {
      std::copy(x + group.tokens[r] * hidden, x + (group.tokens[r] + 1) * hidden,
                dst + r * hidden);
    }
  }
  return request;
}

}  // namespace

MoeDispatcher::MoeDispatcher(
    RouterEngine* engine,
    std::vector<std::unique_ptr<ExpertConnection>> connections,
    double fanout_timeout_seconds, RouterMetrics* metrics)
    : engine_(engine),
      metrics_(metrics),
      connections_(std::move(connections)),
      fanout_timeout_seconds_(fanout_timeout_seconds) {}

void MoeDispatcher::Dispatch(const v1::RunMoeRequest& request,
                             std::chrono::system_clock::time_point deadline,
                             v1::RunMoeResponse* response,
                             std::function<void(absl::Status)> done) {
  const int64_t hidden = engine_->config().hidden_size;
  absl::StatusOr<F32Rows> x = DecodeF32Rows(request.hidden(), hidden, "hidden");
  if (!x.ok()) {
    done(x.status());
    return;
  }
  absl::StatusOr<DispatchPlan> plan =
      engine_->Plan(request.layer(), x->data, x->rows);
  if (!plan.ok()) {
    done(plan.status());
    return;
  }
  metrics_->RecordPlan(*plan);
  auto fan = std::make_shared<FanOut>();
  fan->engine = engine_;
  fan->metrics = metrics_;
  fan->start = absl::Now();
  fan->response = response;
  fan->done = std::move(done);
  fan->plan = *std::move(plan);
  for (size_t s = 0; s < fan->plan.servers.size(); ++s) {
    if (fan->plan.servers[s].groups.empty()) continue;
    fan->servers.push_back(static_cast<int>(s));
    fan->connections.push_back(connections_[s].get());
  }
  if (fan->servers.empty()) {  // no tokens, or every slot dropped
    fan->Complete();
    return;
  }
  // Build every request before sending any, so that a fast answer cannot
  // complete the fan-out while the input is still being read.
  std::vector<std::unique_ptr<v1::RunExpertsRequest>> requests;
  for (int s : fan->servers) {
    requests.push_back(BuildRequest(fan->plan, s, x->data, hidden));
  }
  fan->outputs.resize(fan->servers.size());
  fan->pending = static_cast<int>(fan->servers.size());
  deadline = std::min(
      deadline, std::chrono::system_clock::now() +
                    std::chrono::microseconds(
                        static_cast<int64_t>(fanout_timeout_seconds_ * 1e6)));
  for (size_t i = 0; i < fan->servers.size(); ++i) {
    connections_[fan->servers[i]]->Call(
        std::move(requests[i]), deadline,
        [fan, i](absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>> answer) {
          fan->OnExpertDone(i, std::move(answer));
        });
  }
}

}  // namespace moe
