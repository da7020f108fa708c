// The server side of a streaming Generate call (public or internal), fed by
// a producer on any thread. Tokens appended while a write is in flight are
// coalesced into the next response, so a slow client never blocks the
// producer, and every token is written exactly once, in order.
//
// Ownership: Create() returns a shared_ptr; gRPC holds its own reference
// from Create() until OnDone, so the producer may keep appending (no-ops
// once the call is over) for as long as it holds its pointer.
#ifndef MOE_CORE_RPC_TOKEN_STREAM_WRITER_H_
#define MOE_CORE_RPC_TOKEN_STREAM_WRITER_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/server_callback.h"
#include "moe/v1/generate.pb.h"

namespace moe {

class TokenStreamWriter
    : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  // Every response carries `request_id`.
  static std::shared_ptr<TokenStreamWriter> Create(std::string request_id);

  // `on_cancel` runs once, on a gRPC thread, when the client cancels or the
  // deadline passes; immediately (on the calling thread) if that already
  // happened. Must not block.
  void SetCancelHandler(std::function<void()> on_cancel);

  // Queues `part`'s token_ids and logprobs for the client.
  void Append(const v1::GenerateResponse& part);

  // Ends the call. With an OK status the last response (carrying any tokens
  // still queued) gets `finish_reason` and `usage`; with an error, queued
  // tokens are written first and the call then fails with `status`. Only
  // the first Close counts.
  void Close(const grpc::Status& status, v1::FinishReason finish_reason,
             const v1::Usage& usage);

  // True once the client cancelled (or the deadline passed).
  bool cancelled() const;

  // grpc::ServerWriteReactor.
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  explicit TokenStreamWriter(std::string request_id);
  // Starts the next write or the finish when nothing is in flight.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasPendingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string request_id_;
  mutable absl::Mutex mu_;
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);
  v1::GenerateResponse in_flight_;  // owned by gRPC while writing_
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;     // a write failed
  bool finished_ ABSL_GUARDED_BY(mu_) = false;   // Finish was started
  std::optional<grpc::Status> close_status_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_cancel_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<TokenStreamWriter> self_;  // gRPC's reference
};

}  // namespace moe

#endif  // MOE_CORE_RPC_TOKEN_STREAM_WRITER_H_
