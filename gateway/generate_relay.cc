#include "gateway/generate_relay.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace moe {

std::shared_ptr<GenerateRelay> GenerateRelay::Start(
    v1::AttentionService::Stub* stub,
    const grpc::CallbackServerContext& server_context,
    v1::AttentionGenerateRequest request, std::optional<PrefillTarget> prefill,
    std::shared_ptr<PublicWriter> writer, bool allow_handoff, DoneCallback on_done) {
  std::shared_ptr<GenerateRelay> relay(new GenerateRelay());
  relay->self_ = relay;
  relay->server_context_ = &server_context;
  relay->context_ = grpc::ClientContext::FromCallbackServerContext(
      server_context, grpc::PropagationOptions());
  relay->request_ = std::move(request);
  relay->request_.set_await_transfer(prefill.has_value());
  relay->prefill_ = std::move(prefill);
  relay->writer_ = std::move(writer);
  relay->allow_handoff_ = allow_handoff;
  relay->on_done_ = std::move(on_done);
  stub->async()->Generate(relay->context_.get(), &relay->request_,
                          relay.get());
  relay->StartRead(&relay->response_);
  relay->StartCall();
  return relay;
}

void GenerateRelay::Abort() {
  {
    absl::MutexLock lock(&mu_);
    aborted_ = true;
  }
  Cancel();
}

void GenerateRelay::Cancel() {
  bool cancel_prefill = false;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    cancel_prefill = prefill_started_ && !prefill_done_;
  }
  // Outside the lock: a cancellation may run this relay's reactions.
  context_->TryCancel();
  if (cancel_prefill) prefill_context_->TryCancel();
}

void GenerateRelay::StartPrefill(const v1::KvReservation& reservation) {
  absl::MutexLock lock(&mu_);
  if (prefill_started_ || cancelled_) return;
  prefill_started_ = true;
  // The client's deadline and cancellation reach the prefill too.
  prefill_context_ = grpc::ClientContext::FromCallbackServerContext(
      *server_context_, grpc::PropagationOptions());
  *prefill_request_.mutable_request() = request_.request();
  prefill_request_.set_resumed_tokens(request_.resumed_tokens());
  v1::KvDestination* destination = prefill_request_.mutable_destination();
  destination->set_address(prefill_->decode_address);
  *destination->mutable_reservation() = reservation;
  std::shared_ptr<GenerateRelay> self = self_;
  prefill_->stub->async()->Prefill(
      prefill_context_.get(), &prefill_request_, &prefill_result_,
      [self](grpc::Status status) { self->OnPrefillDone(status); });
}

void GenerateRelay::OnPrefillDone(const grpc::Status& status) {
  std::shared_ptr<GenerateRelay> keep;
  {
    absl::MutexLock lock(&mu_);
    prefill_done_ = true;
    prefill_status_ = status;
    MaybeCloseLocked();
    if (closed_) keep = std::move(self_);
  }
  // Without its K/V the decode server can only fail: end it now.
  if (!status.ok()) context_->TryCancel();
}

void GenerateRelay::OnReadDone(bool ok) {
  if (!ok) return;  // the stream ended; OnDone follows
  if (response_.has_reservation() && prefill_.has_value()) {
    StartPrefill(response_.reservation());
  }
  const v1::GenerateResponse& body = response_.response();
  streamed_.insert(streamed_.end(), body.token_ids().begin(),
                   body.token_ids().end());
  if (body.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    finish_reason_ = body.finish_reason();
    usage_ = body.usage();
  }
  if (body.token_ids_size() > 0 || body.logprobs_size() > 0) {
    writer_->Append(body);
  }
  response_.Clear();
  StartRead(&response_);
}

void GenerateRelay::OnDone(const grpc::Status& status) {
  std::shared_ptr<GenerateRelay> keep;
  bool cancel_prefill = false;
  {
    absl::MutexLock lock(&mu_);
    decode_status_ = status;
    cancel_prefill = !status.ok() && prefill_started_ && !prefill_done_;
    prefill_cancelled_ = cancel_prefill;
    MaybeCloseLocked();
    if (closed_) keep = std::move(self_);
  }
  if (cancel_prefill) prefill_context_->TryCancel();
}

void GenerateRelay::MaybeCloseLocked() {
  if (closed_ || !decode_status_.has_value() ||
      (prefill_started_ && !prefill_done_)) {
    return;
  }
  closed_ = true;
  const std::string prefill_address = prefill_.has_value() ? prefill_->address : "";
  // Tokens of the prompt that earlier relays of this request generated.
  const int resumed = request_.resumed_tokens();
  std::optional<RelayFailure> handoff;
  if (aborted_) {
    // The attention server's usage never arrived: report what the client got.
    v1::Usage usage;
    usage.set_prompt_tokens(request_.request().prompt_ids_size() - resumed);
    usage.set_completion_tokens(static_cast<int>(streamed_.size()) + resumed);
    writer_->Close(grpc::Status::OK, v1::FINISH_REASON_ABORT, usage);
  } else if (prefill_status_.has_value() && !prefill_status_->ok() &&
             !prefill_cancelled_) {
    // The prefill's error explains the decode call's cancellation.
    const grpc::StatusCode code = prefill_status_->error_code();
    const bool keep_code = code == grpc::StatusCode::INVALID_ARGUMENT ||
                           code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                           code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                           code == grpc::StatusCode::CANCELLED ||
                           code == grpc::StatusCode::FAILED_PRECONDITION;
    writer_->Close(
        grpc::Status(keep_code ? code : grpc::StatusCode::UNAVAILABLE,
                     absl::StrCat("prefill server ", prefill_address,
                                  " failed: ", prefill_status_->error_message())),
        v1::FINISH_REASON_UNSPECIFIED, v1::Usage());
  } else if (!decode_status_->ok() && allow_handoff_ && !cancelled_ &&
             decode_status_->error_code() == grpc::StatusCode::UNAVAILABLE) {
    handoff = RelayFailure{streamed_, *decode_status_};  // writer stays open
  } else if (!decode_status_->ok()) {
    writer_->Close(*decode_status_, v1::FINISH_REASON_UNSPECIFIED, v1::Usage());
  } else if (finish_reason_ == v1::FINISH_REASON_UNSPECIFIED) {
    writer_->Close(grpc::Status(grpc::StatusCode::INTERNAL,
                                "attention server ended the stream without a "
                                "finish reason"),
                   v1::FINISH_REASON_UNSPECIFIED, v1::Usage());
  } else {
    v1::Usage usage = usage_;
    usage.set_prompt_tokens(usage.prompt_tokens() - resumed);
    usage.set_completion_tokens(usage.completion_tokens() + resumed);
    if (prefill_done_) {
      // The part of the transfer the request waited for: after the prefill.
      usage.set_transfer_seconds(prefill_result_.transfer_tail_seconds());
      usage.set_transfer_bytes(prefill_result_.transfer_bytes());
    }
    writer_->Close(grpc::Status::OK, finish_reason_, usage);
  }
  if (on_done_) on_done_(std::move(handoff));
}

}  // namespace moe
