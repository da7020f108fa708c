// One public Generate call relayed to the attention servers.
//
// Colocated (an attention server of role both): the upstream Generate
// stream's tokens go to the client's writer as they arrive, and its end
// (finish reason and usage, or its error) ends the client's call.
//
// Disaggregated (a prefill and a decode server): the decode server's
// Generate (await_transfer) first answers with a K/V reservation; the relay
// then asks the prefill server to Prefill into it, and relays the decode
// server's tokens (from the first one on). A prefill failure cancels the
// decode call and ends the client's call with the prefill's error (the
// decode server frees the reservation); a decode failure cancels the
// prefill.
//
// Both upstream calls inherit the client's deadline and are cancelled when
// the client cancels, so the attention servers free the request's KV
// blocks. Abort() ends the request with FINISH_REASON_ABORT.
//
// Handoff (migration): when started with allow_handoff and the decode (or
// colocated) call fails with UNAVAILABLE while the client's call is still
// open, the relay does NOT close the client's call: `on_done` receives a
// RelayFailure with the tokens this relay streamed and the error, and its
// owner either continues the request elsewhere on the same writer or
// closes the writer with that error.
//
// Resumed requests (request.resumed_tokens > 0, a migration's next relay):
// the usage the client gets counts the resumed tokens as completion tokens,
// not prompt tokens.
//
// Ownership: Start() returns a shared_ptr; the relay also holds itself until
// every upstream call is done, then runs `on_done` once.
#ifndef MOE_GATEWAY_GENERATE_RELAY_H_
#define MOE_GATEWAY_GENERATE_RELAY_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/rpc/token_stream_writer.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/client_callback.h"
#include "moe/v1/attention.grpc.pb.h"

namespace moe {

using PublicWriter = TokenStreamWriter<v1::GenerateResponse>;

// Where the prompt of a disaggregated request is prefilled.
struct PrefillTarget {
  v1::AttentionService::Stub* stub = nullptr;  // the prefill server
  std::string address;                         // for messages
  std::string decode_address;                  // where its K/V goes
};

// How a relay that handed off ended (see the file comment).
struct RelayFailure {
  std::vector<int32_t> streamed;  // tokens this relay sent to the client
  grpc::Status status;            // the upstream call's error
};

class GenerateRelay
    : public grpc::ClientReadReactor<v1::AttentionGenerateResponse> {
 public:
  // Starts the upstream call on `stub` (role both, or the decode server
  // when `prefill` is set). `server_context` is the client's call (its
  // deadline and cancellation propagate); `writer` receives the stream;
  // `on_done` runs once, after the client's call has been closed, or with
  // the failure when the relay hands off (only with `allow_handoff`).
  using DoneCallback = std::function<void(std::optional<RelayFailure>)>;
  static std::shared_ptr<GenerateRelay> Start(
      v1::AttentionService::Stub* stub,
      const grpc::CallbackServerContext& server_context,
      v1::AttentionGenerateRequest request,
      std::optional<PrefillTarget> prefill,
      std::shared_ptr<PublicWriter> writer, bool allow_handoff, DoneCallback on_done);

  // Ends the request: the upstream calls are cancelled and the client's
  // stream finishes with FINISH_REASON_ABORT and the usage so far.
  void Abort();
  // Cancels the upstream calls (the client went away).
  void Cancel();

  // grpc::ClientReadReactor.
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  GenerateRelay() = default;
  void StartPrefill(const v1::KvReservation& reservation);
  void OnPrefillDone(const grpc::Status& status);
  // Closes the client's call once every upstream call is done.
  void MaybeCloseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const grpc::CallbackServerContext* server_context_ = nullptr;
  std::unique_ptr<grpc::ClientContext> context_;  // the Generate call
  v1::AttentionGenerateRequest request_;
  v1::AttentionGenerateResponse response_;  // the read in flight
  std::optional<PrefillTarget> prefill_;
  std::shared_ptr<PublicWriter> writer_;
  bool allow_handoff_ = false;
  DoneCallback on_done_;

  // The Prefill call, once started.
  std::unique_ptr<grpc::ClientContext> prefill_context_;
  v1::PrefillRequest prefill_request_;
  v1::PrefillResult prefill_result_;

  absl::Mutex mu_;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool prefill_started_ ABSL_GUARDED_BY(mu_) = false;
  bool prefill_done_ ABSL_GUARDED_BY(mu_) = false;
  // The prefill was cancelled because the decode call failed first.
  bool prefill_cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> prefill_status_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> decode_status_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int32_t> streamed_;  // reader thread, then under mu_ at close
  v1::FinishReason finish_reason_ = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage_;
  std::shared_ptr<GenerateRelay> self_;
};

}  // namespace moe

#endif  // MOE_GATEWAY_GENERATE_RELAY_H_
