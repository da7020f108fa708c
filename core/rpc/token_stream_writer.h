// The server side of a streaming Generate call (public or internal), fed by
// a producer on any thread. Tokens appended while a write is in flight are
// coalesced into the next response, so a slow client never blocks the
// producer, and every token is written exactly once, in order.
//
// Response is v1::GenerateResponse (the public stream) or
// v1::AttentionGenerateResponse (the internal one, which wraps it and can
// carry a K/V reservation first).
//
// Ownership: Create() returns a shared_ptr; gRPC holds its own reference
// from Create() until OnDone, so the producer may keep appending (no-ops
// once the call is over) for as long as it holds its pointer.
#ifndef MOE_CORE_RPC_TOKEN_STREAM_WRITER_H_
#define MOE_CORE_RPC_TOKEN_STREAM_WRITER_H_

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "grpcpp/support/server_callback.h"
#include "moe/v1/attention.pb.h"
#include "moe/v1/generate.pb.h"

namespace moe {
namespace internal {
inline v1::GenerateResponse* TokenBody(v1::GenerateResponse* r) { return r; }
inline v1::GenerateResponse* TokenBody(v1::AttentionGenerateResponse* r) {
  return r->mutable_response();
}
}  // namespace internal

// Sees what a stream carries, for metrics. Called with the writer's lock
// held: must be cheap, thread-safe, and must not call the writer.
class TokenStreamObserver {
 public:
  virtual ~TokenStreamObserver() = default;
  // `count` tokens were queued for the client.
  virtual void OnTokens(int count) = 0;
  // The call was closed (the first Close only).
  virtual void OnClose(const grpc::Status& status,
                       v1::FinishReason finish_reason) = 0;
};

// Turns a stream's token ids into text (the gateway's tokenizer), so that
// each response carries the text of its tokens. Called with the writer's
// lock held, in stream order: must not call the writer.
class TokenTextDecoder {
 public:
  virtual ~TokenTextDecoder() = default;
  // The text that `ids` (the next tokens of the stream) make final.
  virtual std::string Push(absl::Span<const int32_t> ids) = 0;
  // The text still held back when the stream ends.
  virtual std::string Finish() = 0;
};

template <typename Response>
class TokenStreamWriter : public grpc::ServerWriteReactor<Response> {
 public:
  // Every response carries `request_id`.
  static std::shared_ptr<TokenStreamWriter> Create(std::string request_id) {
    std::shared_ptr<TokenStreamWriter> writer(
        new TokenStreamWriter(std::move(request_id)));
    writer->self_ = writer;
    return writer;
  }

  // `on_cancel` runs once, on a gRPC thread, when the client cancels or the
  // deadline passes; immediately (on the calling thread) if that already
  // happened. Must not block.
  void SetCancelHandler(std::function<void()> on_cancel) {
    {
      absl::MutexLock lock(&mu_);
      if (!cancelled_) {
        on_cancel_ = std::move(on_cancel);
        return;
      }
    }
    on_cancel();
  }

  // Reports Append and Close to `observer` from now on.
  void SetObserver(std::shared_ptr<TokenStreamObserver> observer) {
    absl::MutexLock lock(&mu_);
    observer_ = std::move(observer);
  }

  // Fills the text of every response from now on.
  void SetTextDecoder(std::unique_ptr<TokenTextDecoder> decoder) {
    absl::MutexLock lock(&mu_);
    text_decoder_ = std::move(decoder);
  }

  // Queues `message` as is, ahead of any tokens appended later (e.g. a
  // reservation). Messages keep their order.
  void Send(const Response& message) {
    absl::MutexLock lock(&mu_);
    if (close_status_.has_value() || broken_) return;
    control_.push_back(message);
    PumpLocked();
  }

  // Queues `part`'s token_ids and logprobs for the client.
  void Append(const v1::GenerateResponse& part) {
    absl::MutexLock lock(&mu_);
    if (close_status_.has_value() || broken_) return;
    v1::GenerateResponse* body = internal::TokenBody(&pending_);
    body->mutable_token_ids()->MergeFrom(part.token_ids());
    body->mutable_logprobs()->MergeFrom(part.logprobs());
    if (text_decoder_ != nullptr && part.token_ids_size() > 0) {
      body->mutable_text()->append(text_decoder_->Push(absl::MakeConstSpan(
          part.token_ids().data(), part.token_ids().size())));
    }
    if (observer_ != nullptr && part.token_ids_size() > 0) {
      observer_->OnTokens(part.token_ids_size());
    }
    PumpLocked();
  }

  // Ends the call. With an OK status the last response (carrying any tokens
  // still queued) gets `finish_reason` and `usage`; with an error, queued
  // tokens are written first and the call then fails with `status`. Only
  // the first Close counts.
  void Close(const grpc::Status& status, v1::FinishReason finish_reason,
             const v1::Usage& usage) {
    absl::MutexLock lock(&mu_);
    if (close_status_.has_value()) return;
    close_status_ = status;
    if (observer_ != nullptr) observer_->OnClose(status, finish_reason);
    if (status.ok()) {
      v1::GenerateResponse* body = internal::TokenBody(&pending_);
      body->set_finish_reason(finish_reason);
      *body->mutable_usage() = usage;
      if (text_decoder_ != nullptr) {
        body->mutable_text()->append(text_decoder_->Finish());
      }
    }
    PumpLocked();
  }

  // True once the client cancelled (or the deadline passed).
  bool cancelled() const {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

  // grpc::ServerWriteReactor.
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) broken_ = true;
    PumpLocked();
  }

  void OnCancel() override {
    std::function<void()> handler;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      handler = std::move(on_cancel_);
      on_cancel_ = nullptr;
    }
    if (handler) handler();
  }

  void OnDone() override {
    // Drop gRPC's reference last: this may delete the writer.
    std::shared_ptr<TokenStreamWriter> self = std::move(self_);
  }

 private:
  explicit TokenStreamWriter(std::string request_id)
      : request_id_(std::move(request_id)) {}

  bool HasPendingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const v1::GenerateResponse* body = internal::TokenBody(&pending_);
    return body->token_ids_size() > 0 || body->logprobs_size() > 0 ||
           !body->text().empty();
  }

  // Starts the next write or the finish when nothing is in flight.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    const bool closing = close_status_.has_value();
    if (broken_) {
      // The client is gone: nothing more can be written, only finished.
      if (closing) {
        finished_ = true;
        this->Finish(close_status_->ok() ? grpc::Status::CANCELLED
                                         : *close_status_);
      }
      return;
    }
    if (!control_.empty()) {
      in_flight_ = std::move(control_.front());
      control_.pop_front();
      internal::TokenBody(&in_flight_)->set_request_id(request_id_);
      writing_ = true;
      this->StartWrite(&in_flight_);
      return;
    }
    if (closing && close_status_->ok() && !last_written_) {
      // The last response is written on its own and the call finished once
      // it is done (OnWriteDone), not with StartWriteAndFinish: gRPC's
      // in-process transport (the gateway's OpenAI HTTP API calls the
      // gateway through it) can drop a message sent together with the
      // status, and the client would miss the finish reason and usage.
      in_flight_.Swap(&pending_);
      pending_.Clear();
      internal::TokenBody(&in_flight_)->set_request_id(request_id_);
      writing_ = true;
      last_written_ = true;
      this->StartWrite(&in_flight_);
      return;
    }
    if (HasPendingLocked()) {
      in_flight_.Swap(&pending_);
      pending_.Clear();
      internal::TokenBody(&in_flight_)->set_request_id(request_id_);
      writing_ = true;
      this->StartWrite(&in_flight_);
      return;
    }
    if (closing) {
      finished_ = true;
      this->Finish(*close_status_);
    }
  }

  const std::string request_id_;
  mutable absl::Mutex mu_;
  std::deque<Response> control_ ABSL_GUARDED_BY(mu_);
  Response pending_ ABSL_GUARDED_BY(mu_);
  Response in_flight_;  // owned by gRPC while writing_
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;     // a write failed
  bool finished_ ABSL_GUARDED_BY(mu_) = false;   // Finish was started
  bool last_written_ ABSL_GUARDED_BY(mu_) = false;  // the OK close's response
  std::optional<grpc::Status> close_status_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_cancel_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<TokenStreamObserver> observer_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<TokenTextDecoder> text_decoder_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<TokenStreamWriter> self_;  // gRPC's reference
};

}  // namespace moe

#endif  // MOE_CORE_RPC_TOKEN_STREAM_WRITER_H_
