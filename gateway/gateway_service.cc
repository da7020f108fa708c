#include "gateway/gateway_service.h"

#include <algorithm>
#include <cstdio>
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
                                       GatewayMetrics* metrics,
                                       std::unique_ptr<TextFront> text,
                                       std::string model_name)
    : config_(std::move(config)),
      model_name_(std::move(model_name)),
      pools_(pools),
      max_in_flight_(max_in_flight),
      bearer_token_(std::move(bearer_token)),
      metrics_(metrics),
      text_(std::move(text)) {}

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
  // Text becomes prompt_ids here: past the gateway, requests carry ids.
  v1::GenerateRequest resolved = *request;
  absl::Status text_status = text_->ResolvePrompt(resolved);
  absl::StatusOr<DecodedGenerateRequest> decoded =
      text_status.ok() ? DecodeGenerateRequest(resolved, config_)
                       : absl::StatusOr<DecodedGenerateRequest>(text_status);
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
      // The hint travels as gRPC's own server pushback trailer (honoured by
      // clients with a retry policy) and in the message.
      const int64_t hint_ms = absl::ToInt64Milliseconds(RetryHintLocked());
      context->AddTrailingMetadata(std::string(kRetryPushbackKey),
                                   std::to_string(hint_ms));
      return Refuse(
          id, grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           absl::StrCat("gateway has ", running_.size(),
                                        " requests in flight, its limit; "
                                        "retry after ", hint_ms, " ms")));
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

  auto run = std::make_shared<Run>();
  run->id = id;
  run->context = context;
  run->started = absl::Now();
  *run->upstream.mutable_request() = std::move(resolved);
  run->upstream.mutable_request()->clear_keep_special_tokens_in_text();
  run->upstream.mutable_request()->set_request_id(id);
  if (!decoded->has_seed) {
    run->upstream.mutable_request()->mutable_sampling()->set_seed(RandomU64());
  }
  run->writer = PublicWriter::Create(id);
  if (std::unique_ptr<TokenTextDecoder> decoder = text_->NewTextDecoder(
          /*skip_special_tokens=*/!request->keep_special_tokens_in_text())) {
    run->writer->SetTextDecoder(std::move(decoder));
  }
  run->writer->SetObserver(metrics_->TrackRequest(
      static_cast<int>(decoded->generation.prompt.size())));
  run->writer->SetCancelHandler([this, id] { CancelRelay(id); });
  StartAttempt(run);
  return run->writer.get();
}

void GatewayServiceImpl::StartAttempt(const std::shared_ptr<Run>& run) {
  // A migrated request goes on from the tokens the client already has: they
  // join the prompt, and only the rest is generated.
  v1::AttentionGenerateRequest upstream = run->upstream;
  v1::GenerateRequest& r = *upstream.mutable_request();
  for (int32_t token : run->streamed) r.add_prompt_ids(token);
  r.set_max_tokens(r.max_tokens() - static_cast<int>(run->streamed.size()));
  upstream.set_resumed_tokens(static_cast<int>(run->streamed.size()));
  const absl::Span<const int32_t> prompt(r.prompt_ids().data(),
                                         r.prompt_ids().size());
  std::shared_ptr<GenerateRelay> relay;
  if (pools_.colocated != nullptr) {
    const AttentionPool::Choice server =
        pools_.colocated->Acquire(prompt, run->failed_servers);
    relay = GenerateRelay::Start(
        server.stub, *run->context, std::move(upstream), std::nullopt,
        run->writer, /*allow_handoff=*/true,
        [this, run, index = server.index](std::optional<RelayFailure> failure) {
          pools_.colocated->Release(index);
          OnAttemptDone(run, pools_.colocated, index, std::move(failure));
        });
  } else {
    const AttentionPool::Choice decode =
        pools_.decode->Acquire({}, run->failed_servers);
    const AttentionPool::Choice prefill = pools_.prefill->Acquire(prompt);
    PrefillTarget target;
    target.stub = prefill.stub;
    target.address = *prefill.address;
    target.decode_address = *decode.address;
    relay = GenerateRelay::Start(
        decode.stub, *run->context, std::move(upstream), std::move(target),
        run->writer, /*allow_handoff=*/true,
        [this, run, d = decode.index,
         p = prefill.index](std::optional<RelayFailure> failure) {
          pools_.decode->Release(d);
          pools_.prefill->Release(p);
          OnAttemptDone(run, pools_.decode, d, std::move(failure));
        });
  }
  bool abort = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(run->id);
    if (it != running_.end()) {  // else the request already ended
      it->second.relay = relay;
      abort = it->second.abort_requested;
    }
  }
  if (abort) relay->Abort();
}

void GatewayServiceImpl::OnAttemptDone(const std::shared_ptr<Run>& run,
                                       AttentionPool* pool, int server,
                                       std::optional<RelayFailure> failure) {
  if (!failure.has_value()) {
    Unregister(run->id, absl::Now() - run->started);
    return;
  }
  run->streamed.insert(run->streamed.end(), failure->streamed.begin(),
                       failure->streamed.end());
  const std::string name = pool->address(server);
  auto fail = [this, run, name](const grpc::Status& status) {
    run->writer->Close(
        grpc::Status(status.error_code(),
                     absl::StrCat("attention server ", name,
                                  " failed: ", status.error_message())),
        v1::FINISH_REASON_UNSPECIFIED, v1::Usage());
    Unregister(run->id, absl::Now() - run->started);
  };
  if (run->migrations >= kMaxMigrations || run->writer->cancelled() ||
      static_cast<int>(run->failed_servers.size()) + 1 >= pool->size()) {
    fail(failure->status);
    return;
  }
  // Only a server that is gone is worth leaving: one that still serves
  // failed the request itself (e.g. an expert without live replica), and
  // would fail it again anywhere.
  pool->CheckServing(
      server, kMigrationHealthCheckSeconds,
      [this, run, server, name, fail,
       status = failure->status](bool serving) {
        if (serving) {
          fail(status);
          return;
        }
        ++run->migrations;
        run->failed_servers.push_back(server);
        metrics_->RecordMigration();
        std::printf("gateway: request %s migrates after %zu tokens: attention "
                    "server %s is gone (%s)\n",
                    run->id.c_str(), run->streamed.size(), name.c_str(),
                    status.error_message().c_str());
        std::fflush(stdout);
        if (FinishedByStreamedTokens(*run)) return;
        StartAttempt(run);
      });
}

bool GatewayServiceImpl::FinishedByStreamedTokens(Run& run) {
  // The failed server may have streamed the last token without its finish.
  const v1::GenerateRequest& r = run.upstream.request();
  const int n = static_cast<int>(run.streamed.size());
  std::optional<v1::FinishReason> reason;
  if (n > 0) {
    const int32_t last = run.streamed.back();
    const bool eos = !r.ignore_eos() &&
                     std::find(config_.eos_token_ids.begin(),
                               config_.eos_token_ids.end(),
                               last) != config_.eos_token_ids.end();
    const bool stop = std::find(r.stop_token_ids().begin(),
                                r.stop_token_ids().end(),
                                last) != r.stop_token_ids().end();
    if (eos || stop) reason = v1::FINISH_REASON_STOP;
  }
  if (!reason.has_value() && n >= r.max_tokens()) {
    reason = v1::FINISH_REASON_LENGTH;
  }
  if (!reason.has_value()) return false;
  v1::Usage usage;
  usage.set_prompt_tokens(r.prompt_ids_size());
  usage.set_completion_tokens(n);
  run.writer->Close(grpc::Status::OK, *reason, usage);
  Unregister(run.id, absl::Now() - run.started);
  return true;
}

void GatewayServiceImpl::CancelRelay(const std::string& request_id) {
  std::shared_ptr<GenerateRelay> relay;
  {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(request_id);
    if (it != running_.end()) relay = it->second.relay;
  }
  if (relay != nullptr) relay->Cancel();
}

void GatewayServiceImpl::Unregister(const std::string& request_id,
                                    absl::Duration duration) {
  absl::MutexLock lock(&mu_);
  running_.erase(request_id);
  // For the retry hint of refused calls: a moving average of how long a
  // request holds its slot.
  mean_request_seconds_ =
      0.9 * mean_request_seconds_ + 0.1 * absl::ToDoubleSeconds(duration);
}

absl::Duration GatewayServiceImpl::RetryHintLocked() const {
  // With N requests in flight that each hold a slot for about D, one frees
  // up every D / N on average.
  const double seconds = mean_request_seconds_ /
                         std::max<double>(1.0, static_cast<double>(running_.size()));
  return absl::Milliseconds(std::clamp(seconds * 1e3, 50.0, 10000.0));
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
      // Also kept for a relay that a migration starts later.
      it->second.abort_requested = true;
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
  response->set_has_tokenizer(text_->has_tokenizer());
  response->set_has_chat_template(text_->has_chat_template());
  response->set_model_name(model_name_);
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
