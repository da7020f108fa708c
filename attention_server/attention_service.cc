#include "attention_server/attention_service.h"

#include <memory>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "attention_server/kv_receiver.h"
#include "attention_server/kv_sender.h"
#include "core/rpc/channel_util.h"
#include "core/rpc/generate_codec.h"
#include "core/rpc/grpc_status.h"
#include "core/rpc/token_stream_writer.h"

namespace moe {
namespace {

using InternalWriter = TokenStreamWriter<v1::AttentionGenerateResponse>;

uint64_t RandomSeed() {
  std::random_device device;
  return (uint64_t{device()} << 32) | device();
}

v1::Usage ToProto(const SequenceUsage& usage) {
  v1::Usage out;
  out.set_prompt_tokens(usage.prompt_tokens);
  out.set_completion_tokens(usage.completion_tokens);
  out.set_cached_tokens(usage.cached_tokens);
  out.set_queue_seconds(usage.queue_seconds);
  out.set_prefill_seconds(usage.prefill_seconds);
  out.set_transfer_seconds(usage.transfer_seconds);
  out.set_decode_seconds(usage.decode_seconds);
  return out;
}

// Forwards one engine sequence's events to the call's writer.
class StreamObserver : public SequenceObserver {
 public:
  explicit StreamObserver(std::shared_ptr<InternalWriter> writer)
      : writer_(std::move(writer)) {}

  void OnReserved(const KvReservation& reservation) override {
    v1::AttentionGenerateResponse message;
    v1::KvReservation* out = message.mutable_reservation();
    out->set_reservation_id(reservation.id);
    out->set_num_blocks(reservation.num_blocks);
    out->set_block_size(reservation.block_size);
    out->set_num_layers(reservation.num_layers);
    out->set_block_bytes(reservation.block_bytes);
    writer_->Send(message);
  }

  void OnToken(const GeneratedToken& token) override {
    v1::GenerateResponse part;
    part.add_token_ids(token.token);
    if (token.logprobs.has_value()) AppendLogprobs(*token.logprobs, &part);
    writer_->Append(part);
  }

  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceUsage& usage) override {
    writer_->Close(ToGrpcStatus(status), ToProto(reason), ToProto(usage));
  }

 private:
  std::shared_ptr<InternalWriter> writer_;
};

// One Prefill call: done once the engine finished the prefill and the
// decode server acknowledged the K/V (or either failed). The caller
// cancelling ends the prefill. Owned by itself until OnDone, and by the
// engine and the sender while they hold it.
class PrefillCall : public grpc::ServerUnaryReactor, public SequenceObserver {
 public:
  static std::shared_ptr<PrefillCall> Create(v1::PrefillResult* result,
                                             AttentionEngine* engine) {
    std::shared_ptr<PrefillCall> call(new PrefillCall(result, engine));
    call->self_ = call;
    return call;
  }

  void set_id(AttentionEngine::SequenceId id) {
    absl::MutexLock lock(&mu_);
    id_ = id;
    if (transfer_failed_ || cancelled_) engine_->Cancel(id);
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (id_.has_value()) engine_->Cancel(*id_);
  }

  void OnDone() override {
    std::shared_ptr<PrefillCall> self = std::move(self_);  // may delete this
  }

  void OnPrefilled(const GeneratedToken& first, bool finished,
                   FinishReason reason) override {
    absl::MutexLock lock(&mu_);
    result_->set_first_token(first.token);
    result_->set_finished(finished);
  }

  void OnFinish(const absl::Status& status, FinishReason reason,
                const SequenceUsage& usage) override {
    absl::MutexLock lock(&mu_);
    result_->set_cached_tokens(usage.cached_tokens);
    result_->set_queue_seconds(usage.queue_seconds);
    result_->set_prefill_seconds(usage.prefill_seconds);
    if (!status.ok() && status_.ok()) status_ = status;
    prefill_done_ = true;
    MaybeFinishLocked();
  }

  void OnTransferDone(const absl::Status& status, const KvSendStats& stats) {
    absl::MutexLock lock(&mu_);
    result_->set_transfer_bytes(stats.bytes);
    result_->set_transfer_seconds(stats.seconds);
    result_->set_transfer_tail_seconds(stats.tail_seconds);
    result_->set_transfer_busy_seconds(stats.busy_seconds);
    if (!status.ok()) {
      if (status_.ok()) status_ = status;
      // The decode server cannot take the K/V: stop computing it.
      transfer_failed_ = true;
      if (id_.has_value()) engine_->Cancel(*id_);
    }
    transfer_done_ = true;
    MaybeFinishLocked();
  }

 private:
  PrefillCall(v1::PrefillResult* result, AttentionEngine* engine)
      : result_(result), engine_(engine) {}

  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!prefill_done_ || !transfer_done_ || finished_) return;
    finished_ = true;
    Finish(ToGrpcStatus(status_));
  }

  v1::PrefillResult* result_;
  AttentionEngine* engine_;
  absl::Mutex mu_;
  std::optional<AttentionEngine::SequenceId> id_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  bool prefill_done_ ABSL_GUARDED_BY(mu_) = false;
  bool transfer_done_ ABSL_GUARDED_BY(mu_) = false;
  bool transfer_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<PrefillCall> self_;
};

grpc::Status WrongRole(AttentionRole role, absl::string_view call,
                       absl::string_view needs) {
  return grpc::Status(
      grpc::StatusCode::FAILED_PRECONDITION,
      absl::StrCat("this attention server has role ", AttentionRoleName(role),
                   "; ", call, " needs role ", needs));
}

// resumed_tokens of a migrated request: in [0, prompt length).
absl::Status ApplyResumedTokens(int32_t resumed, GenerationRequest& request) {
  if (resumed < 0 || resumed >= static_cast<int64_t>(request.prompt.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resumed_tokens: ", resumed, " must be in [0, ",
        request.prompt.size(), ") (the prompt's length)"));
  }
  request.first_sampler_step = resumed;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecodedPrefillRequest> DecodePrefillRequest(
    const v1::PrefillRequest& request, const ModelConfig& config,
    const KvCacheShape& shape) {
  absl::StatusOr<DecodedGenerateRequest> decoded =
      DecodeGenerateRequest(request.request(), config);
  if (!decoded.ok()) return decoded.status();
  const v1::KvDestination& destination = request.destination();
  if (destination.address().empty()) {
    return absl::InvalidArgumentError(
        "destination.address: the decode server is missing");
  }
  // The decode server's blocks must have this server's layout: the bytes
  // are copied as they are.
  const v1::KvReservation& r = destination.reservation();
  const int64_t block_bytes = shape.BlockBytesPerLayer();
  const int prompt_blocks =
      static_cast<int>((decoded->generation.prompt.size() + shape.block_size -
                        1) / shape.block_size);
  if (r.block_size() != shape.block_size || r.num_layers() != shape.num_layers ||
      r.block_bytes() != block_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "destination.reservation: the decode server's K/V layout (",
        r.num_layers(), " layers, blocks of ", r.block_size(), " tokens, ",
        r.block_bytes(), " bytes) differs from this server's (",
        shape.num_layers, " layers, blocks of ", shape.block_size,
        " tokens, ", block_bytes, " bytes)"));
  }
  if (r.num_blocks() != prompt_blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "destination.reservation.num_blocks: the reservation covers ",
        r.num_blocks(), " blocks but the prompt needs ", prompt_blocks));
  }
  if (absl::Status s =
          ApplyResumedTokens(request.resumed_tokens(), decoded->generation);
      !s.ok()) {
    return s;
  }
  DecodedPrefillRequest out;
  out.request = *std::move(decoded);
  out.address = destination.address();
  KvReservation& reservation = out.reservation;
  reservation.id = r.reservation_id();
  reservation.num_blocks = r.num_blocks();
  reservation.block_size = r.block_size();
  reservation.num_layers = r.num_layers();
  reservation.block_bytes = r.block_bytes();
  return out;
}

grpc::ServerWriteReactor<v1::AttentionGenerateResponse>*
AttentionServiceImpl::Generate(grpc::CallbackServerContext* context,
                               const v1::AttentionGenerateRequest* request) {
  std::shared_ptr<InternalWriter> writer =
      InternalWriter::Create(request->request().request_id());
  auto refuse = [&](const grpc::Status& status) {
    writer->Close(status, v1::FINISH_REASON_UNSPECIFIED, v1::Usage());
    return writer.get();
  };
  if (role_ == AttentionRole::kPrefill) {
    return refuse(WrongRole(role_, "Generate", "both or decode"));
  }
  if (role_ == AttentionRole::kDecode && !request->await_transfer()) {
    return refuse(WrongRole(role_, "Generate without await_transfer", "both"));
  }
  absl::StatusOr<DecodedGenerateRequest> decoded =
      DecodeGenerateRequest(request->request(), engine_->config());
  if (!decoded.ok()) return refuse(ToGrpcStatus(decoded.status()));
  if (absl::Status s =
          ApplyResumedTokens(request->resumed_tokens(), decoded->generation);
      !s.ok()) {
    return refuse(ToGrpcStatus(s));
  }
  SequenceSpec spec;
  spec.request = std::move(decoded->generation);
  spec.logprobs = decoded->logprobs;
  if (!decoded->has_seed) spec.request.sampling.seed = RandomSeed();
  if (request->await_transfer()) spec.role = SequenceRole::kRemotePrefill;
  absl::StatusOr<AttentionEngine::SequenceId> id = engine_->Submit(
      std::move(spec), std::make_shared<StreamObserver>(writer));
  if (!id.ok()) return refuse(ToGrpcStatus(id.status()));
  writer->SetCancelHandler(
      [engine = engine_, id = *id] { engine->Cancel(id); });
  return writer.get();
}

v1::AttentionService::Stub* AttentionServiceImpl::DecodeStub(
    const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<v1::AttentionService::Stub>& stub = decode_stubs_[address];
  if (stub == nullptr) {
    stub = v1::AttentionService::NewStub(MakeChannel(address));
  }
  return stub.get();
}

grpc::ServerUnaryReactor* AttentionServiceImpl::Prefill(
    grpc::CallbackServerContext* context, const v1::PrefillRequest* request,
    v1::PrefillResult* response) {
  auto refuse = [&](const absl::Status& status) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  };
  if (role_ == AttentionRole::kDecode) {
    return refuse(FromGrpcStatus(WrongRole(role_, "Prefill", "prefill or both")));
  }
  absl::StatusOr<DecodedPrefillRequest> decoded =
      DecodePrefillRequest(*request, engine_->config(), engine_->kv_shape());
  if (!decoded.ok()) return refuse(decoded.status());
  const std::string& address = decoded->address;
  const KvReservation& reservation = decoded->reservation;

  std::shared_ptr<PrefillCall> call = PrefillCall::Create(response, engine_);
  std::shared_ptr<KvSender> sender = KvSender::Start(
      DecodeStub(address), address, reservation,
      [call, metrics = metrics_](const absl::Status& status,
                                 const KvSendStats& stats) {
        metrics->RecordKvTransfer(KvTransferDirection::kSent, stats.bytes,
                                  stats.busy_seconds, status.ok());
        call->OnTransferDone(status, stats);
      });
  SequenceSpec spec;
  spec.request = std::move(decoded->request.generation);
  spec.logprobs = decoded->request.logprobs;
  if (!decoded->request.has_seed) spec.request.sampling.seed = RandomSeed();
  spec.role = SequenceRole::kPrefillOnly;
  spec.transfer = sender;
  absl::StatusOr<AttentionEngine::SequenceId> id =
      engine_->Submit(std::move(spec), call);
  if (!id.ok()) {
    sender->Abort(id.status());
    // The sender's Done and this OnFinish complete the call.
    call->OnFinish(id.status(), FinishReason::kAbort, SequenceUsage());
    return call.get();
  }
  call->set_id(*id);
  return call.get();
}

grpc::ServerReadReactor<v1::KvTransferChunk>* AttentionServiceImpl::TransferKv(
    grpc::CallbackServerContext* context, v1::KvTransferAck* response) {
  if (role_ == AttentionRole::kPrefill) {
    // A reactor that refuses at once.
    class Refuse : public grpc::ServerReadReactor<v1::KvTransferChunk> {
     public:
      explicit Refuse(grpc::Status status) { Finish(std::move(status)); }
      void OnDone() override { delete this; }
    };
    return new Refuse(WrongRole(role_, "TransferKv", "decode or both"));
  }
  return new KvReceiver(engine_, response, context->peer(), metrics_);
}

grpc::ServerUnaryReactor* AttentionServiceImpl::GetLoad(
    grpc::CallbackServerContext* context, const v1::GetLoadRequest* /*request*/,
    v1::AttentionLoad* response) {
  const AttentionLoadInfo load = engine_->Load();
  response->set_running(load.running);
  response->set_waiting(load.waiting);
  response->set_kv_blocks_total(load.kv_blocks_total);
  response->set_kv_blocks_free(load.kv_blocks_free);
  response->set_kv_blocks_cached(load.kv_blocks_cached);
  response->set_kv_block_size(load.kv_block_size);
  response->set_kv_blocks_reserved(load.kv_blocks_reserved);
  response->set_steps(load.steps);
  response->set_generated_tokens(load.generated_tokens);
  response->set_prefix_queried_tokens(load.prefix_queried_tokens);
  response->set_prefix_hit_tokens(load.prefix_hit_tokens);
  response->set_role(std::string(AttentionRoleName(role_)));
  response->set_micro_batched_steps(load.micro_batched_steps);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace moe
