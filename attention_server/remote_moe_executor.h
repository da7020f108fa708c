// The MoE step of the attention server: one RouterService.RunMoe call per
// MoE layer for the whole batch.
#ifndef MOE_ATTENTION_SERVER_REMOTE_MOE_EXECUTOR_H_
#define MOE_ATTENTION_SERVER_REMOTE_MOE_EXECUTOR_H_

#include <memory>
#include <string>

#include "core/moe_executor.h"
#include "moe/v1/router.grpc.pb.h"

namespace moe {

class RemoteMoeExecutor : public MoeExecutor {
 public:
  // `hidden_size` is the model's; each call waits at most `timeout_seconds`.
  RemoteMoeExecutor(const std::string& router_address, int64_t hidden_size,
                    double timeout_seconds);

  // UNAVAILABLE naming the router when the call fails or times out;
  // INTERNAL when the router answers with a malformed tensor.
  absl::Status RunMoe(int layer, const float* x, int64_t tokens,
                      float* out) override;

 private:
  std::string address_;
  int64_t hidden_size_;
  double timeout_seconds_;
  std::unique_ptr<v1::RouterService::Stub> stub_;
  v1::RunMoeRequest request_;    // reused across calls (one caller)
  v1::RunMoeResponse response_;
};

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_REMOTE_MOE_EXECUTOR_H_
