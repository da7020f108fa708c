#include "gateway/gateway_service.h"

#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/rpc/generate_codec.h"
#include "core/rpc/grpc_status.h"
#include "core/security/bearer_token.h"

namespace moe {
namespace {

uint64_t RandomU64() {
  std::random_device device;
  return (uint64_t{device()} << 32) | device();
}

grpc::ServerWriteReactor<v1::GenerateResponse>* Refuse(
    const std::string& request_id, const grpc::Status& status) {
  std::shared_ptr<PublicWriter> writer = PublicWriter::Create(request_id);
  writer->Close(status, v1::FINISH_REASON_UNSPECIFIED, v1::Usage());
  return writer.get();
}

grpc::Status Unauthenticated() {
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      security::kInvalidBearerToken);
}

}  // namespace

GatewayServiceImpl::GatewayServiceImpl(ModelConfig config, Pools pools,
                                       int max_in_flight,
                                       std::string bearer_token,
                                       GatewayMetrics* metrics)
    : config_(std::move(config)),
      pools_(pools),
      max_in_flight_(max_in_flight),
      bearer_token_(std::move(bearer_token)),
      metrics_(metrics) {}

bool GatewayServiceImpl::Authorized(
    const grpc::CallbackServerContext& context, bool generate) {
  if (bearer_token_.empty() ||
      security::HasBearerToken(context.client_metadata(), bearer_token_)) {
    return true;
  }
  if (generate) {
    metrics_->RecordRejection(GatewayMetrics::Rejection::kUnauthenticated,
                              absl::StatusCode::kUnauthenticated);
  } else {
    metrics_->RecordUnauthenticatedCall();
  }
  return false;
}

std::string GatewayServiceImpl::NewRequestId() {
  // Unique within this gateway; the random part keeps ids from different
  // gateways or restarts apart in logs.
  static const uint64_t kInstance = RandomU64();
  return absl::StrFormat("gw-%08x-%d", static_cast<uint32_t>(kInstance),
                         ++next_id_);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GatewayServiceImpl::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  if (!Authorized(*context, /*generate=*/true)) {
    return Refuse(request->request_id(), Unauthenticated());
  }
  absl::StatusOr<DecodedGenerateRequest> decoded =
      DecodeGenerateRequest(*request, config_);
  if (!decoded.ok()) {
    metrics_->RecordRejection(GatewayMetrics::Rejection::kInvalidArgument,
                              decoded.status().code());
    return Refuse(request->request_id(), ToGrpcStatus(decoded.status()));
  }
  std::string id = request->request_id();
  {
    absl::MutexLock lock(&mu_);
    if (!accepting_) {
      metrics_->RecordRejection(GatewayMetrics::Rejection::kDraining,
                                absl::StatusCode::kUnavailable);
      return Refuse(id, grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                     "gateway is draining; retry elsewhere"));
    }
    if (static_cast<int64_t>(running_.size()) >= max_in_flight_) {
      metrics_->RecordRejection(GatewayMetrics::Rejection::kOverCapacity,
                                absl::StatusCode::kResourceExhausted);
      return Refuse(
          id, grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           absl::StrCat("gateway has ", running_.size(),
                                        " requests in flight, its limit; "
                                        "retry later")));
    }
    if (id.empty()) id = NewRequestId();
    if (running_.contains(id)) {
      metrics_->RecordRejection(GatewayMetrics::Rejection::kInvalidArgument,
                                absl::StatusCode::kInvalidArgument);
      return Refuse(id, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                     absl::StrCat("request_id: \"", id,
                                                  "\" is already running")));
    }
    running_[id] = Running();
  }

  v1::AttentionGenerateRequest upstream;
  *upstream.mutable_request() = *request;
  upstream.mutable_request()->set_request_id(id);
  if (!decoded->has_seed) {
    upstream.mutable_request()->mutable_sampling()->set_seed(RandomU64());
  }
  const absl::Span<const int32_t> prompt = decoded->generation.prompt;
  std::shared_ptr<PublicWriter> writer = PublicWriter::Create(id);
  writer->SetObserver(metrics_->TrackRequest(static_cast<int>(prompt.size())));
  std::shared_ptr<GenerateRelay> relay;
  if (pools_.colocated != nullptr) {
    const AttentionPool::Choice server = pools_.colocated->Acquire(prompt);
    relay = GenerateRelay::Start(server.stub, *context, std::move(upstream),
                                 std::nullopt, writer,
                                 [this, id, index = server.index] {
                                   pools_.colocated->Release(index);
                                   Unregister(id);
                                 });
  } else {
    const AttentionPool::Choice decode = pools_.decode->Acquire();
    const AttentionPool::Choice prefill = pools_.prefill->Acquire(prompt);
    PrefillTarget target;
    target.stub = prefill.stub;
    target.address = *prefill.address;
    target.decode_address = *decode.address;
    relay = GenerateRelay::Start(
        decode.stub, *context, std::move(upstream), std::move(target), writer,
        [this, id, d = decode.index, p = prefill.index] {
          pools_.decode->Release(d);
          pools_.prefill->Release(p);
          Unregister(id);
        });
  }
  bool abort = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(id);
    if (it != running_.end()) {  // else the relay already ended
      it->second.relay = relay;
      abort = it->second.abort_requested;
    }
  }
  if (abort) relay->Abort();
  writer->SetCancelHandler([weak = std::weak_ptr<GenerateRelay>(relay)] {
    if (std::shared_ptr<GenerateRelay> r = weak.lock()) r->Cancel();
  });
  return writer.get();
}

void GatewayServiceImpl::Unregister(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  running_.erase(request_id);
}

grpc::ServerUnaryReactor* GatewayServiceImpl::Abort(
    grpc::CallbackServerContext* context, const v1::AbortRequest* request,
    v1::AbortResponse* response) {
  if (!Authorized(*context, /*generate=*/false)) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(Unauthenticated());
    return reactor;
  }
  std::shared_ptr<GenerateRelay> relay;
  bool found = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(request->request_id());
    if (it != running_.end()) {
      found = true;
      relay = it->second.relay;
      if (relay == nullptr) it->second.abort_requested = true;
    }
  }
  if (relay != nullptr) relay->Abort();
  response->set_found(found);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GatewayServiceImpl::GetModelInfo(
    grpc::CallbackServerContext* context,
    const v1::GetModelInfoRequest* /*request*/, v1::ModelInfo* response) {
  if (!Authorized(*context, /*generate=*/false)) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(Unauthenticated());
    return reactor;
  }
  response->set_architecture(std::string(ArchitectureName(config_.family)));
  response->set_vocab_size(config_.vocab_size);
  response->set_max_context_length(config_.max_position_embeddings);
  response->set_num_layers(config_.num_layers);
  response->set_num_experts(config_.num_experts);
  response->set_num_experts_per_tok(config_.num_experts_per_tok);
  for (int id : config_.eos_token_ids) response->add_eos_token_ids(id);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

void GatewayServiceImpl::StopAccepting() {
  absl::MutexLock lock(&mu_);
  accepting_ = false;
}

int64_t GatewayServiceImpl::InFlight() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(running_.size());
}

}  // namespace moe
