// The MoE step of the attention server: one call per MoE layer for the
// whole batch (or micro-batch), over one long-lived RouterService.MoeStream
// (opened on first use and reopened after a failure), which saves the
// per-call setup of unary RPCs on the hot path. Several calls may be in
// flight (micro-batch ping-pong); answers are matched by call id.
#ifndef MOE_ATTENTION_SERVER_REMOTE_MOE_EXECUTOR_H_
#define MOE_ATTENTION_SERVER_REMOTE_MOE_EXECUTOR_H_

#include <map>
#include <memory>
#include <string>

#include "core/deadline_watchdog.h"
#include "core/moe_executor.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/sync_stream.h"
#include "moe/v1/router.grpc.pb.h"

namespace moe {

// Not thread-safe: called by the engine's executor thread only.
class RemoteMoeExecutor : public MoeExecutor {
 public:
  // `hidden_size` is the model's; each call waits at most `timeout_seconds`.
  // `wire_dtype` is that of the hidden states sent (tensor_codec.h); the
  // router answers in it.
  RemoteMoeExecutor(const std::string& router_address, int64_t hidden_size,
                    double timeout_seconds,
                    v1::DType wire_dtype = v1::DTYPE_F32);
  ~RemoteMoeExecutor() override;

  // Errors: UNAVAILABLE naming the router when the call fails, the stream
  // breaks or the timeout passes; the router's own error (e.g. UNAVAILABLE
  // naming an expert server) when it answers with one; INTERNAL for a
  // malformed answer. Tokens the router could not compute (failed_tokens)
  // come back in WaitMoe's `failed`, with an UNAVAILABLE status carrying the
  // router's failure_message.
  absl::Status RunMoe(int layer, const float* x, int64_t tokens,
                      float* out) override;
  absl::StatusOr<uint64_t> StartMoe(int layer, const float* x, int64_t tokens,
                                    float* out) override;
  absl::Status WaitMoe(uint64_t handle, MoeTokenFailures* failed) override;
  bool WaitsOnRemote() const override { return true; }

 private:
  using Stream =
      grpc::ClientReaderWriter<v1::RunMoeRequest, v1::RunMoeResponse>;
  struct Call {
    int layer = 0;
    int64_t tokens = 0;
    float* out = nullptr;
    DeadlineWatchdog::Handle deadline = 0;
    bool done = false;
    absl::Status status;
    MoeTokenFailures failed;  // tokens the router could not compute
  };
  // Fails every call in flight with `why` and drops the stream.
  void BreakStream(const std::string& why);
  // Stores one answer in its call.
  void Deliver(const v1::RunMoeResponse& response);

  std::string address_;
  int64_t hidden_size_;
  double timeout_seconds_;
  v1::DType wire_dtype_;
  std::unique_ptr<v1::RouterService::Stub> stub_;
  DeadlineWatchdog watchdog_;  // each call's timeout
  std::shared_ptr<grpc::ClientContext> context_;  // of stream_
  std::unique_ptr<Stream> stream_;
  std::shared_ptr<std::atomic<bool>> expired_;  // a timeout cancelled stream_
  uint64_t next_call_id_ = 1;
  std::map<uint64_t, Call> calls_;  // started, not yet waited for
  v1::RunMoeRequest request_;  // reused across calls
  v1::RunMoeResponse response_;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_REMOTE_MOE_EXECUTOR_H_
