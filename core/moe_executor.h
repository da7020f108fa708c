// The MoE step of a transformer layer, behind an interface so that the same
// layer code runs the experts in process (the engine) or through the router
// (the attention server).
#ifndef MOE_CORE_MOE_EXECUTOR_H_
#define MOE_CORE_MOE_EXECUTOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moe {

// Tokens of one MoE step that could not be computed (an expert they are
// routed to had no live server): their rows of `out` hold no result and the
// requests owning them must fail with `status`; the other rows are valid.
struct MoeTokenFailures {
  std::vector<int64_t> tokens;  // row indices of the step, ascending
  absl::Status status;          // UNAVAILABLE naming the experts and servers
};

class MoeExecutor {
 public:
  virtual ~MoeExecutor() = default;
  // out[t, :] = sum over the routed experts e of token t of w[t, e] * FFN_e(
  // x[t, :]) for t in [0, tokens), where x is the post-attention-normed
  // hidden state [tokens, hidden]. Shared experts are not included. Called by
  // one thread at a time.
  virtual absl::Status RunMoe(int layer, const float* x, int64_t tokens,
                              float* out) = 0;
  // True when RunMoe mostly waits on other processes (an RPC) rather than
  // computing here: the caller then parks its compute threads for the wait.
  virtual bool WaitsOnRemote() const { return false; }

  // The same step in two halves, so that the caller can compute something
  // else (another micro-batch's attention) while it runs elsewhere. `x` need
  // only stay valid until StartMoe returns, `out` until WaitMoe(handle)
  // returns; every started step must be waited for, in any order. The
  // default computes everything in StartMoe. WaitMoe reports a step that
  // failed for some tokens only in `failed` (OK is returned); with `failed`
  // null such a step fails as a whole.
  virtual absl::StatusOr<uint64_t> StartMoe(int layer, const float* x,
                                            int64_t tokens, float* out) {
    absl::Status status = RunMoe(layer, x, tokens, out);
    if (!status.ok()) return status;
    return uint64_t{0};
  }
  virtual absl::Status WaitMoe(uint64_t handle, MoeTokenFailures* failed) {
    return absl::OkStatus();
  }
};

}  // namespace moe

#endif  // MOE_CORE_MOE_EXECUTOR_H_
