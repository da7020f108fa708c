// The MoE step of the attention server: one call per MoE layer for the
// whole batch, over one long-lived RouterService.MoeStream (opened on first
// use and reopened after a failure), which saves the per-call setup of
// unary RPCs on the hot path.
#ifndef MOE_ATTENTION_SERVER_REMOTE_MOE_EXECUTOR_H_
#define MOE_ATTENTION_SERVER_REMOTE_MOE_EXECUTOR_H_

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
  RemoteMoeExecutor(const std::string& router_address, int64_t hidden_size,
                    double timeout_seconds);
  ~RemoteMoeExecutor() override;

  // UNAVAILABLE naming the router when the call fails, the stream breaks or
  // the timeout passes; the router's own error (e.g. UNAVAILABLE naming an
  // expert server) when it answers with one; INTERNAL for a malformed
  // answer.
  absl::Status RunMoe(int layer, const float* x, int64_t tokens,
                      float* out) override;
  bool WaitsOnRemote() const override { return true; }

 private:
  using Stream =
      grpc::ClientReaderWriter<v1::RunMoeRequest, v1::RunMoeResponse>;
  void CloseStream();

  std::string address_;
  int64_t hidden_size_;
  double timeout_seconds_;
  std::unique_ptr<v1::RouterService::Stub> stub_;
  DeadlineWatchdog watchdog_;  // each call's timeout
  std::shared_ptr<grpc::ClientContext> context_;  // of stream_
  std::unique_ptr<Stream> stream_;
  uint64_t next_call_id_ = 1;
  v1::RunMoeRequest request_;  // reused across calls
  v1::RunMoeResponse response_;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_REMOTE_MOE_EXECUTOR_H_
