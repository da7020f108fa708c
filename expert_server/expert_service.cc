#include "expert_server/expert_service.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/cpu_affinity.h"
#include "core/rpc/call_stream_reactor.h"
#include "core/rpc/grpc_status.h"
#include "core/rpc/tensor_codec.h"
#include "expert_server/shm_expert_channel.h"

namespace moe {
namespace {

// A serve step of the NCCL data plane: computes `groups` (the request's
// groups with their weights; x and out unused) with the engine's backend.
using ServeTask = ExpertEngine::BackendTask;

}  // namespace

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

absl::StatusOr<std::vector<ExpertWork>> DecodeNcclExpertRequest(
    const v1::RunExpertsRequest& request, const ExpertEngine& engine) {
  const int64_t hidden = engine.config().hidden_size;
  std::vector<ExpertWork> work;
  work.reserve(request.groups_size());
  for (int i = 0; i < request.groups_size(); ++i) {
    const v1::ExpertGroup& group = request.groups(i);
    const v1::Tensor& t = group.hidden();
    const std::string what = absl::StrCat("groups[", i, "].hidden");
    if (t.dtype() != v1::DTYPE_F32) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": dtype must be F32"));
    }
    if (t.shape_size() != 2 || t.shape(0) < 0 || t.shape(1) != hidden) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": shape must be [tokens, ", hidden, "] with tokens >= 0"));
    }
    if (!t.data().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": carries ", t.data().size(),
                       " bytes, but its rows travel over NCCL (nccl is set)"));
    }
    work.push_back(
        {group.layer(), group.expert(), nullptr, t.shape(0), nullptr});
  }
  if (absl::Status valid = engine.Validate(work); !valid.ok()) return valid;
  return work;
}

ExpertServiceImpl::~ExpertServiceImpl() {
  std::vector<std::thread> joins;
  {
    absl::MutexLock lock(&mu_);
    if (link_ != nullptr) link_->closing.store(true);
    joins.swap(joins_);
  }
  for (std::thread& t : joins) t.join();
}

void ExpertServiceImpl::Process(const v1::RunExpertsRequest& request,
                                v1::RunExpertsResponse* response,
                                std::function<void(absl::Status)> done) {
  if (request.has_nccl()) {
    ProcessNccl(request, response, std::move(done));
    return;
  }
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
  // Each output goes back in its input's dtype. F32 outputs are allocated
  // in the response and written in place; BF16 ones are computed into
  // `wide` and rounded into the response when the engine is done.
  int64_t bytes_in = 0;
  int64_t bytes_out = 0;
  for (const v1::ExpertGroup& group : request.groups()) {
    bytes_in += static_cast<int64_t>(group.hidden().data().size());
  }
  auto wide = std::make_shared<std::vector<std::vector<float>>>(work.size());
  for (size_t i = 0; i < work.size(); ++i) {
    ExpertWork& w = work[i];
    const v1::DType dtype = request.groups(static_cast<int>(i)).hidden().dtype();
    v1::Tensor* out = response->add_outputs();
    out->set_dtype(dtype);
    out->add_shape(w.tokens);
    out->add_shape(hidden);
    std::string* data = out->mutable_data();
    data->resize(static_cast<size_t>(w.tokens * hidden) *
                 WireBytesPerElement(dtype));
    bytes_out += static_cast<int64_t>(data->size());
    if (dtype == v1::DTYPE_F32) {
      w.out = reinterpret_cast<float*>(data->data());
    } else {
      (*wide)[i].resize(static_cast<size_t>(w.tokens * hidden));
      w.out = (*wide)[i].data();
    }
  }
  std::vector<ExpertWork> recorded = work;  // for the metrics; no pointers used
  engine_->Submit(
      std::move(work),
      [this, inputs, wide, response, recorded = std::move(recorded), bytes_in,
       bytes_out, done = std::move(done)](absl::Status status, double seconds) {
        response->set_compute_seconds(seconds);
        if (status.ok()) {
          for (size_t i = 0; i < wide->size(); ++i) {
            if ((*wide)[i].empty()) continue;
            v1::Tensor* out = response->mutable_outputs(static_cast<int>(i));
            WriteWire(out->dtype(), (*wide)[i].data(),
                      static_cast<int64_t>((*wide)[i].size()),
                      out->mutable_data()->data());
          }
          metrics_->RecordCall(recorded, bytes_in, bytes_out, seconds);
        }
        done(std::move(status));
      });
}

void ExpertServiceImpl::ProcessNccl(const v1::RunExpertsRequest& request,
                                    v1::RunExpertsResponse* response,
                                    std::function<void(absl::Status)> done) {
  const v1::NcclTransfer& transfer = request.nccl();
  std::shared_ptr<NcclLink> link;
  {
    absl::MutexLock lock(&mu_);
    if (link_ == nullptr || link_->id != transfer.link()) {
      done(absl::FailedPreconditionError(absl::StrCat(
          "nccl.link: this expert server has no NCCL data plane link ",
          transfer.link(), " (JoinDataPlane first)")));
      return;
    }
    if (link_->communicator->aborted()) {
      done(absl::FailedPreconditionError(
          absl::StrCat("nccl.link: the NCCL data plane link ", transfer.link(),
                       " was aborted by an earlier failure")));
      return;
    }
    if (transfer.sequence() != link_->next_sequence) {
      // The two sides no longer post their operations in the same order:
      // the link is unusable (the router aborts its side too).
      const uint64_t expected = link_->next_sequence;
      link_->closing.store(true);
      link_ = nullptr;
      done(absl::FailedPreconditionError(absl::StrCat(
          "nccl.sequence: expected exchange ", expected, " of the link, got ",
          transfer.sequence(), "; the link is dropped")));
      return;
    }
    ++link_->next_sequence;
    link = link_;
  }
  absl::StatusOr<std::vector<ExpertWork>> work =
      DecodeNcclExpertRequest(request, *engine_);
  if (!work.ok()) {
    done(work.status());
    return;
  }
  const int64_t hidden = engine_->config().hidden_size;
  int64_t rows = 0;
  for (const ExpertWork& w : *work) {
    rows += w.tokens;
    v1::Tensor* out = response->add_outputs();
    out->set_dtype(v1::DTYPE_F32);
    out->add_shape(w.tokens);
    out->add_shape(hidden);
  }
  // BF16 on the wire, each way.
  const int64_t bytes = rows * hidden * 2;
  const int64_t timeout_ms =
      std::clamp<int64_t>(transfer.timeout_ms(), 1, 600'000);
  const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  ServeTask task = [link, deadline](ExpertFfnBackend& backend,
                                    absl::Span<const FfnGroup> groups) {
    return link->communicator->ServeExperts(
        /*peer=*/0, backend, groups, deadline,
        [&link] { return link->closing.load(); });
  };
  std::vector<ExpertWork> recorded = *work;
  // On the engine's executor thread (the only one that may use its
  // backend), after the batches queued before it.
  engine_->SubmitTask(
      *std::move(work), std::move(task),
      [this, response, recorded = std::move(recorded), bytes,
       done = std::move(done)](absl::Status status, double seconds) {
        response->set_compute_seconds(seconds);
        if (status.ok()) {
          metrics_->RecordCall(recorded, bytes, bytes, seconds);
        }
        done(std::move(status));
      });
}

grpc::ServerUnaryReactor* ExpertServiceImpl::JoinDataPlane(
    grpc::CallbackServerContext* context,
    const v1::JoinDataPlaneRequest* request,
    v1::JoinDataPlaneResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto refuse = [reactor](absl::Status status) {
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  };
  if (data_plane_ != DataPlane::kNccl) {
    return refuse(absl::FailedPreconditionError(
        "this expert server was started with --data_plane=grpc; the NCCL "
        "data plane needs --data_plane=nccl and --device=cuda:N"));
  }
  if (request->rank() < 1 || request->nranks() <= request->rank()) {
    return refuse(absl::InvalidArgumentError(absl::StrCat(
        "rank: ", request->rank(), " of nranks ", request->nranks(),
        ": an expert server's rank must be in [1, nranks) (the router is "
        "rank 0)")));
  }
  if (request->link() == 0) {
    return refuse(absl::InvalidArgumentError("link: must not be 0"));
  }
  const double timeout = request->timeout_seconds();
  if (!std::isfinite(timeout) || timeout <= 0 || timeout > 3600) {
    return refuse(absl::InvalidArgumentError(
        absl::StrCat("timeout_seconds: must be in (0, 3600], got ", timeout)));
  }
  NcclJoinOptions options;
  options.unique_id = request->nccl_unique_id();
  options.nranks = request->nranks();
  options.rank = request->rank();
  options.device = device_;
  options.peer = absl::StrCat("the router (", context->peer(), ")");
  options.timeout = absl::Seconds(timeout);
  // A server shutting down cancels the call, which ends the wait.
  options.cancelled = [context] { return context->IsCancelled(); };
  const uint64_t id = request->link();
  absl::MutexLock lock(&mu_);
  joins_.emplace_back(
      [this, reactor, response, options = std::move(options), id] {
        absl::StatusOr<std::unique_ptr<NcclCommunicator>> communicator =
            JoinNcclCommunicator(options);
        if (!communicator.ok()) {
          reactor->Finish(ToGrpcStatus(communicator.status()));
          return;
        }
        auto link = std::make_shared<NcclLink>();
        link->id = id;
        link->communicator = *std::move(communicator);
        {
          absl::MutexLock lock(&mu_);
          if (link_ != nullptr) link_->closing.store(true);
          link_ = std::move(link);
        }
        response->set_device(engine_->backend_name());
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
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

grpc::ServerWriteReactor<v1::SharedMemoryEvent>*
ExpertServiceImpl::AttachSharedMemory(
    grpc::CallbackServerContext* /*context*/,
    const v1::AttachSharedMemoryRequest* request) {
  return StartShmAttach(
      *request, accept_shared_memory_,
      [this](const v1::RunExpertsRequest& in, v1::RunExpertsResponse* out,
             std::function<void(absl::Status)> done) {
        Process(in, out, std::move(done));
      },
      [this] {
        if (absl::Status pinned = engine_->PinCallerAsExecutor();
            !pinned.ok()) {
          std::fprintf(stderr,
                       "expert_server: shared-memory channel not pinned: %s\n",
                       std::string(pinned.message()).c_str());
        }
      },
      shared_memory_spin_);
}

namespace {

std::set<std::pair<int, int>> RequestedExperts(
    const v1::ChangeExpertsRequest& request) {
  std::set<std::pair<int, int>> experts;
  for (const v1::ExpertId& id : request.experts()) {
    experts.emplace(id.layer(), id.expert());
  }
  return experts;
}

void DescribeHosted(const ExpertEngine& engine, v1::Placement* out) {
  for (const auto& [layer, expert] : engine.HostedExperts()) {
    v1::ExpertId* id = out->add_experts();
    id->set_layer(layer);
    id->set_expert(expert);
  }
}

}  // namespace

grpc::ServerUnaryReactor* ExpertServiceImpl::LoadExperts(
    grpc::CallbackServerContext* context,
    const v1::ChangeExpertsRequest* request,
    v1::ChangeExpertsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::set<std::pair<int, int>> experts = RequestedExperts(*request);
  absl::MutexLock lock(&mu_);
  joins_.emplace_back([this, reactor, response,
                       experts = std::move(experts)] {
    const absl::Time start = absl::Now();
    // Copying weights in competes with serving for the cores; at the
    // lowest priority the compute threads keep theirs (the load takes
    // longer, and no step waits on it).
    if (absl::Status lowered = LowerCurrentThreadPriority(); !lowered.ok()) {
      std::fprintf(stderr,
                   "expert_server: LoadExperts runs at normal priority: %s\n",
                   std::string(lowered.message()).c_str());
    }
    if (absl::Status valid = engine_->CheckExperts(experts); !valid.ok()) {
      reactor->Finish(ToGrpcStatus(valid));
      return;
    }
    // The series exist before the first call can name a loaded expert.
    metrics_->AddExperts({experts.begin(), experts.end()});
    FinishChange(engine_->LoadExperts(experts), start, response, reactor);
  });
  return reactor;
}

void ExpertServiceImpl::FinishChange(absl::StatusOr<int> changed,
                                     absl::Time start,
                                     v1::ChangeExpertsResponse* response,
                                     grpc::ServerUnaryReactor* reactor) {
  if (!changed.ok()) {
    reactor->Finish(ToGrpcStatus(changed.status()));
    return;
  }
  response->set_changed(*changed);
  DescribeHosted(*engine_, response->mutable_hosted());
  response->set_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  metrics_->SetHostedExperts(
      static_cast<int64_t>(response->hosted().experts_size()));
  reactor->Finish(grpc::Status::OK);
}

grpc::ServerUnaryReactor* ExpertServiceImpl::UnloadExperts(
    grpc::CallbackServerContext* context,
    const v1::ChangeExpertsRequest* request,
    v1::ChangeExpertsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Time start = absl::Now();
  FinishChange(engine_->UnloadExperts(RequestedExperts(*request)), start,
               response, reactor);
  return reactor;
}

grpc::ServerUnaryReactor* ExpertServiceImpl::GetPlacement(
    grpc::CallbackServerContext* context,
    const v1::GetPlacementRequest* /*request*/, v1::Placement* response) {
  DescribeHosted(*engine_, response);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}


}  // namespace moe
