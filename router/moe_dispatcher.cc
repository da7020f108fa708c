#include "router/moe_dispatcher.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/rpc/tensor_codec.h"

namespace moe {
namespace {

using Clock = std::chrono::system_clock;

// A group of the plan: plan.servers[server].groups[group]. Where it is
// computed may differ from `server` after a retry.
struct GroupRef {
  int server = 0;
  int group = 0;
};

// A dead or hung server (UNAVAILABLE, DEADLINE_EXCEEDED), or one that does
// not host an expert the placement puts on it (FAILED_PRECONDITION: it
// restarted with other experts; the router's health probe reloads them
// before marking it up again).
bool IsServerFailure(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded ||
         status.code() == absl::StatusCode::kFailedPrecondition;
}

// State of one dispatch, owned by the expert calls' callbacks; the last one
// to finish combines and runs `done`.
struct FanOut : std::enable_shared_from_this<FanOut> {
  RouterEngine* engine = nullptr;
  RouterMetrics* metrics = nullptr;
  ExpertHealth* health = nullptr;
  const std::vector<std::unique_ptr<ExpertConnection>>* connections = nullptr;
  double fanout_timeout_seconds = 0;
  Clock::time_point caller_deadline;
  absl::Time start;
  v1::RunMoeResponse* response = nullptr;
  std::function<void(absl::Status)> done;
  DispatchPlan plan;
  F32Rows x;  // the batch's input; valid until `done` runs
  // The dtype the caller sent x in: the groups go to the expert servers,
  // and the output back, in it.
  v1::DType wire = v1::DTYPE_F32;
  std::atomic<int> pending{0};

  absl::Mutex mu;
  absl::Status first_error ABSL_GUARDED_BY(mu);
  // rows[s][g]: the output of plan.servers[s].groups[g]; null while not
  // computed, and for groups whose tokens failed.
  std::vector<std::vector<const float*>> rows ABSL_GUARDED_BY(mu);
  // Answers whose rows are referenced from `rows`, kept alive until done.
  std::vector<std::unique_ptr<v1::RunExpertsResponse>> answers
      ABSL_GUARDED_BY(mu);
  std::vector<F32Rows> decoded ABSL_GUARDED_BY(mu);
  std::vector<bool> failed_token ABSL_GUARDED_BY(mu);  // [tokens]
  std::vector<std::string> failures ABSL_GUARDED_BY(mu);
  std::vector<bool> failed_server ABSL_GUARDED_BY(mu);  // in this fan-out

  const ExpertConnection& connection(int server) const {
    return *(*connections)[server];
  }

  std::string ServerName(int server) const {
    return absl::StrCat("expert server ", server, " (",
                        connection(server).address(), ")");
  }

  // Sends `groups` (all computed by `server`) in one request.
  void Send(int server, std::vector<GroupRef> groups,
            Clock::time_point deadline) {
    const int64_t hidden = engine->config().hidden_size;
    auto request = std::make_unique<v1::RunExpertsRequest>();
    for (const GroupRef& ref : groups) {
      const ExpertGroup& group = plan.servers[ref.server].groups[ref.group];
      v1::ExpertGroup* g = request->add_groups();
      g->set_layer(plan.layer);
      g->set_expert(group.expert);
      v1::Tensor* t = g->mutable_hidden();
      t->set_dtype(wire);
      t->add_shape(static_cast<int64_t>(group.tokens.size()));
      t->add_shape(hidden);
      std::string* data = t->mutable_data();
      const int64_t row_bytes = hidden * WireBytesPerElement(wire);
      data->resize(group.tokens.size() * row_bytes);
      for (size_t r = 0; r < group.tokens.size(); ++r) {
        WriteWire(wire, x.data + group.tokens[r] * hidden, hidden,
                  data->data() + r * row_bytes);
      }
    }
    const ExpertConnection::Transport transport = (*connections)[server]->Call(
        std::move(request), deadline,
        [self = shared_from_this(), server, groups = std::move(groups)](
            absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>> answer) {
          self->OnAnswer(server, groups, std::move(answer));
        });
    if (metrics != nullptr) metrics->RecordExpertCall(server, transport);
  }

  void OnAnswer(int server, const std::vector<GroupRef>& groups,
                absl::StatusOr<std::unique_ptr<v1::RunExpertsResponse>> answer) {
    if (answer.ok()) {
      StoreRows(server, groups, *std::move(answer));
    } else if (IsServerFailure(answer.status())) {
      health->MarkDown(server, answer.status());
      Resend(server, groups, answer.status());
    } else {
      // The server refused what the router built: the router's own bug.
      absl::MutexLock lock(&mu);
      if (first_error.ok()) {
        first_error = absl::InternalError(
            absl::StrCat(ServerName(server), " refused layer ", plan.layer,
                         ": ", answer.status().message()));
      }
    }
    if (pending.fetch_sub(1) == 1) Complete();
  }

  void StoreRows(int server, const std::vector<GroupRef>& groups,
                 std::unique_ptr<v1::RunExpertsResponse> answer) {
    const int64_t hidden = engine->config().hidden_size;
    absl::MutexLock lock(&mu);
    if (answer->outputs_size() != static_cast<int>(groups.size())) {
      if (first_error.ok()) {
        first_error = absl::InternalError(absl::StrCat(
            ServerName(server), " returned ", answer->outputs_size(),
            " outputs for ", groups.size(), " groups"));
      }
      return;
    }
    for (size_t i = 0; i < groups.size(); ++i) {
      const ExpertGroup& group =
          plan.servers[groups[i].server].groups[groups[i].group];
      absl::StatusOr<F32Rows> out = DecodeF32Rows(
          answer->outputs(static_cast<int>(i)), hidden,
          absl::StrCat(ServerName(server), " output ", i));
      if (out.ok() && out->rows != static_cast<int64_t>(group.tokens.size())) {
        out = absl::InternalError(
            absl::StrCat(ServerName(server), " output ", i, " has ",
                         out->rows, " rows, expected ", group.tokens.size()));
      }
      if (!out.ok()) {
        if (first_error.ok()) {
          first_error = absl::InternalError(out.status().message());
        }
        return;
      }
      rows[groups[i].server][groups[i].group] = out->data;
      decoded.push_back(*std::move(out));
    }
    answers.push_back(std::move(answer));
  }

  // `server` failed `groups`: each goes to another live replica of its
  // expert (least used by this resend, ties -> lowest id); groups with none
  // fail their tokens.
  void Resend(int server, const std::vector<GroupRef>& groups,
              const absl::Status& why) {
    std::map<int, std::vector<GroupRef>> resend;  // by replica
    {
      absl::MutexLock lock(&mu);
      failed_server[server] = true;
      std::vector<std::string> lost;
      for (const GroupRef& ref : groups) {
        const ExpertGroup& group = plan.servers[ref.server].groups[ref.group];
        int best = -1;
        for (int32_t r : plan.placement->Replicas(plan.layer, group.expert)) {
          if (failed_server[r] || !health->IsUp(r)) continue;
          if (best < 0 || resend[r].size() < resend[best].size()) best = r;
        }
        if (best >= 0) {
          resend[best].push_back(ref);
          continue;
        }
        for (int64_t t : group.tokens) failed_token[t] = true;
        lost.push_back(absl::StrCat(group.expert));
      }
      std::erase_if(resend, [](const auto& entry) { return entry.second.empty(); });
      if (!lost.empty()) {
        failures.push_back(absl::StrCat(
            lost.size() == 1 ? "expert " : "experts ", absl::StrJoin(lost, ", "),
            " of layer ", plan.layer,
            lost.size() == 1 ? " has" : " have", " no live replica: ",
            ServerName(server), " failed: ", why.message()));
      }
    }
    if (resend.empty()) return;
    pending.fetch_add(static_cast<int>(resend.size()));
    const Clock::time_point deadline = std::min(
        caller_deadline,
        Clock::now() + std::chrono::microseconds(
                           static_cast<int64_t>(fanout_timeout_seconds * 1e6)));
    for (auto& [replica, refs] : resend) Send(replica, std::move(refs), deadline);
  }

  void Complete() {
    engine->Release(plan);
    if (!plan.servers.empty()) {
      metrics->RecordFanOut(absl::ToDoubleSeconds(absl::Now() - start));
    }
    absl::Status error;
    std::vector<int64_t> failed;
    std::string failure;
    {
      absl::MutexLock lock(&mu);
      error = first_error;
      for (int64_t t = 0; t < plan.tokens; ++t) {
        if (failed_token[t]) failed.push_back(t);
      }
      failure = absl::StrJoin(failures, "; ");
      if (error.ok()) error = Combine();
    }
    // Every path out of here runs `done`, which may free this fan-out.
    if (error.ok() && !failed.empty()) {
      if (static_cast<int64_t>(failed.size()) == plan.tokens) {
        error = absl::UnavailableError(failure);
      } else {
        for (int64_t t : failed) response->add_failed_tokens(t);
        response->set_failure_message(failure);
      }
    }
    done(error);
  }

  absl::Status Combine() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const int64_t hidden = engine->config().hidden_size;
    v1::Tensor* out = response->mutable_output();
    if (wire == v1::DTYPE_F32) {
      out->set_dtype(v1::DTYPE_F32);
      out->clear_shape();
      out->add_shape(plan.tokens);
      out->add_shape(hidden);
      std::string* data = out->mutable_data();
      data->resize(static_cast<size_t>(plan.tokens * hidden) * sizeof(float));
      engine->Combine(plan, rows, reinterpret_cast<float*>(data->data()));
    } else {
      std::vector<float> combined(static_cast<size_t>(plan.tokens * hidden));
      engine->Combine(plan, rows, combined.data());
      EncodeRows(combined.data(), plan.tokens, hidden, wire, out);
    }
    response->set_rerouted_slots(static_cast<int32_t>(plan.stats.rerouted()));
    response->set_dropped_slots(static_cast<int32_t>(plan.stats.dropped()));
    return absl::OkStatus();
  }
};

// Where each expert of `experts` lives, for the message of tokens that
// failed at planning time: "expert 3 of layer 1 has no live replica (expert
// server 0 (127.0.0.1:5001) is down)".
std::string DescribeMissing(const DispatchPlan& plan,
                            const PlacementTable& placement,
                            const std::vector<std::unique_ptr<ExpertConnection>>&
                                connections) {
  std::vector<int32_t> servers;
  for (int32_t e : plan.unavailable_experts) {
    for (int32_t s : placement.Replicas(plan.layer, e)) servers.push_back(s);
  }
  std::sort(servers.begin(), servers.end());
  servers.erase(std::unique(servers.begin(), servers.end()), servers.end());
  std::vector<std::string> names;
  for (int32_t s : servers) {
    names.push_back(absl::StrCat("expert server ", s, " (",
                                 connections[s]->address(), ")"));
  }
  return absl::StrCat(DescribeUnavailableExperts(plan), " (",
                      absl::StrJoin(names, ", "),
                      servers.size() == 1 ? " is" : " are", " down)");
}

}  // namespace

MoeDispatcher::MoeDispatcher(
    RouterEngine* engine,
    std::vector<std::unique_ptr<ExpertConnection>> connections,
    double fanout_timeout_seconds, double health_probe_seconds,
    RouterMetrics* metrics)
    : engine_(engine),
      metrics_(metrics),
      connections_(std::move(connections)),
      fanout_timeout_seconds_(fanout_timeout_seconds),
      health_probe_seconds_(health_probe_seconds) {
  std::vector<std::string> addresses;
  for (const auto& connection : connections_) {
    addresses.push_back(connection->address());
  }
  health_ = std::make_unique<ExpertHealth>(
      std::move(addresses), health_probe_seconds,
      [metrics](int server, bool up) { metrics->RecordServerState(server, up); });
}

bool MoeDispatcher::HelpReceive(absl::Duration max_wait) {
  for (const std::unique_ptr<ExpertConnection>& connection : connections_) {
    if (connection->HelpReceive(max_wait)) return true;
  }
  return false;
}

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
  absl::StatusOr<DispatchPlan> plan = engine_->Plan(
      request.layer(), x->data, x->rows, health_->DownMask());
  if (!plan.ok()) {
    done(plan.status());
    return;
  }
  metrics_->RecordPlan(*plan);
  auto fan = std::make_shared<FanOut>();
  fan->engine = engine_;
  fan->metrics = metrics_;
  fan->health = health_.get();
  fan->connections = &connections_;
  fan->fanout_timeout_seconds = fanout_timeout_seconds_;
  fan->caller_deadline = deadline;
  fan->start = absl::Now();
  fan->response = response;
  fan->done = std::move(done);
  fan->plan = *std::move(plan);
  fan->x = *std::move(x);
  fan->wire = request.hidden().dtype();
  std::vector<int> servers;
  {
    absl::MutexLock lock(&fan->mu);
    fan->rows.resize(fan->plan.servers.size());
    for (size_t s = 0; s < fan->plan.servers.size(); ++s) {
      fan->rows[s].assign(fan->plan.servers[s].groups.size(), nullptr);
      if (!fan->plan.servers[s].groups.empty()) {
        servers.push_back(static_cast<int>(s));
      }
    }
    fan->failed_token.assign(fan->plan.tokens, false);
    fan->failed_server.assign(fan->plan.servers.size(), false);
    for (int64_t t : fan->plan.failed_tokens) fan->failed_token[t] = true;
    if (!fan->plan.failed_tokens.empty()) {
      fan->failures.push_back(
          DescribeMissing(fan->plan, *fan->plan.placement, connections_));
    }
  }
  if (servers.empty()) {  // no tokens, every slot dropped, or all failed
    fan->Complete();
    return;
  }
  // One count for the sending itself, so that no answer can complete the
  // fan-out before every request is out.
  fan->pending = static_cast<int>(servers.size()) + 1;
  deadline = std::min(
      deadline, std::chrono::system_clock::now() +
                    std::chrono::microseconds(
                        static_cast<int64_t>(fanout_timeout_seconds_ * 1e6)));
  for (int s : servers) {
    std::vector<GroupRef> groups;
    for (size_t g = 0; g < fan->plan.servers[s].groups.size(); ++g) {
      groups.push_back({s, static_cast<int>(g)});
    }
    fan->Send(s, std::move(groups), deadline);
  }
  // Sending is over: the last answer (or this, if all came already)
  // completes.
  if (fan->pending.fetch_sub(1) == 1) fan->Complete();
}

}  // namespace moe
