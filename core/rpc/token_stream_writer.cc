#include "core/rpc/token_stream_writer.h"

#include <utility>

namespace moe {

std::shared_ptr<TokenStreamWriter> TokenStreamWriter::Create(
    std::string request_id) {
  std::shared_ptr<TokenStreamWriter> writer(
      new TokenStreamWriter(std::move(request_id)));
  writer->self_ = writer;
  return writer;
}

TokenStreamWriter::TokenStreamWriter(std::string request_id)
    : request_id_(std::move(request_id)) {}

void TokenStreamWriter::SetCancelHandler(std::function<void()> on_cancel) {
  bool run_now = false;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) {
      run_now = true;
    } else {
      on_cancel_ = std::move(on_cancel);
    }
  }
  if (run_now) on_cancel();
}

bool TokenStreamWriter::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

void TokenStreamWriter::Append(const v1::GenerateResponse& part) {
  absl::MutexLock lock(&mu_);
  if (close_status_.has_value() || broken_) return;
  pending_.mutable_token_ids()->MergeFrom(part.token_ids());
  pending_.mutable_logprobs()->MergeFrom(part.logprobs());
  PumpLocked();
}

void TokenStreamWriter::Close(const grpc::Status& status,
                              v1::FinishReason finish_reason,
                              const v1::Usage& usage) {
  absl::MutexLock lock(&mu_);
  if (close_status_.has_value()) return;
  close_status_ = status;
  if (status.ok()) {
    pending_.set_finish_reason(finish_reason);
    *pending_.mutable_usage() = usage;
  }
  PumpLocked();
}

bool TokenStreamWriter::HasPendingLocked() const {
  return pending_.token_ids_size() > 0 || pending_.logprobs_size() > 0;
}

void TokenStreamWriter::PumpLocked() {
  if (writing_ || finished_) return;
  const bool closing = close_status_.has_value();
  if (broken_) {
    // The client is gone: nothing more can be written, only finished.
    if (closing) {
      finished_ = true;
      Finish(close_status_->ok() ? grpc::Status::CANCELLED : *close_status_);
    }
    return;
  }
  if (closing && close_status_->ok()) {
    in_flight_.Swap(&pending_);
    pending_.Clear();
    in_flight_.set_request_id(request_id_);
    writing_ = true;
    finished_ = true;
    StartWriteAndFinish(&in_flight_, grpc::WriteOptions(), grpc::Status::OK);
    return;
  }
  if (HasPendingLocked()) {
    in_flight_.Swap(&pending_);
    pending_.Clear();
    in_flight_.set_request_id(request_id_);
    writing_ = true;
    StartWrite(&in_flight_);
    return;
  }
  if (closing) {
    finished_ = true;
    Finish(*close_status_);
  }
}

void TokenStreamWriter::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  writing_ = false;
  if (!ok) broken_ = true;
  PumpLocked();
}

void TokenStreamWriter::OnCancel() {
  std::function<void()> handler;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    handler = std::move(on_cancel_);
    on_cancel_ = nullptr;
  }
  if (handler) handler();
}

void TokenStreamWriter::OnDone() {
  // Drop gRPC's reference last: this may delete the writer.
  std::shared_ptr<TokenStreamWriter> self = std::move(self_);
}

}  // namespace moe
