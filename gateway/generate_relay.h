// One public Generate call relayed to an attention server: the upstream
// stream's tokens go to the client's TokenStreamWriter as they arrive, and
// the upstream end (finish reason and usage, or its error) ends the client's
// call. The upstream call inherits the client's deadline and is cancelled
// when the client cancels, so the attention server frees the request's KV
// blocks. Abort() ends the request with FINISH_REASON_ABORT.
//
// Ownership: Start() returns a shared_ptr; the relay also holds itself until
// the upstream call is done (OnDone), then runs `on_done` once.
#ifndef MOE_GATEWAY_GENERATE_RELAY_H_
#define MOE_GATEWAY_GENERATE_RELAY_H_

#include <functional>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/rpc/token_stream_writer.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/client_callback.h"
#include "moe/v1/attention.grpc.pb.h"

namespace moe {

class GenerateRelay
    : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  // Starts the upstream call. `server_context` is the client's call (its
  // deadline and cancellation propagate); `writer` receives the stream;
  // `on_done` runs once after the client's call has been closed.
  static std::shared_ptr<GenerateRelay> Start(
      v1::AttentionService::Stub* stub,
      const grpc::CallbackServerContext& server_context,
      v1::AttentionGenerateRequest request,
      std::shared_ptr<TokenStreamWriter> writer, std::function<void()> on_done);

  // Ends the request: the upstream call is cancelled and the client's
  // stream finishes with FINISH_REASON_ABORT and the usage so far.
  void Abort();
  // Cancels the upstream call (the client went away).
  void Cancel();

  // grpc::ClientReadReactor.
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  GenerateRelay() = default;

  std::unique_ptr<grpc::ClientContext> context_;
  v1::AttentionGenerateRequest request_;
  v1::GenerateResponse response_;  // the read in flight
  std::shared_ptr<TokenStreamWriter> writer_;
  std::function<void()> on_done_;

  absl::Mutex mu_;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
  int completion_tokens_ = 0;  // reader thread only
  v1::FinishReason finish_reason_ = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage_;
  std::shared_ptr<GenerateRelay> self_;
};

}  // namespace moe

#endif  // MOE_GATEWAY_GENERATE_RELAY_H_
