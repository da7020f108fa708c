// Reading a router-shaped MoE answer (v1::RunMoeResponse) into the caller's
// output rows: shared by the attention server's two ways of running a MoE
// step (through the router's stream, or dispatched directly).
#ifndef MOE_ATTENTION_SERVER_MOE_RESPONSE_H_
#define MOE_ATTENTION_SERVER_MOE_RESPONSE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "core/moe_executor.h"
#include "moe/v1/router.pb.h"

namespace moe {

// Copies `response`'s output ([tokens, hidden] F32) into `out` and its
// failed tokens into `failed`. `source` names who answered ("router
// 127.0.0.1:5000") for the errors: the answer's own error (its code, the
// message prefixed with `source` and the layer); INTERNAL for a malformed
// output, a wrong row count or a failed token outside [0, tokens). Failed
// tokens come with UNAVAILABLE carrying the answer's failure_message.
absl::Status ReadMoeResponse(const v1::RunMoeResponse& response,
                             const std::string& source, int layer,
                             int64_t hidden, int64_t tokens, float* out,
                             MoeTokenFailures* failed);

}  // namespace moe

#endif  // MOE_ATTENTION_SERVER_MOE_RESPONSE_H_
