// One streamed Generate call of moe-loadgen, on gRPC's callback API (no
// thread per call), timing every token as it arrives.
#ifndef MOE_TOOLS_MOE_LOADGEN_STREAM_CALL_H_
#define MOE_TOOLS_MOE_LOADGEN_STREAM_CALL_H_

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "grpcpp/client_context.h"
#include "grpcpp/support/client_callback.h"
#include "moe/v1/generate.grpc.pb.h"

namespace moe::loadgen {

using Clock = std::chrono::steady_clock;

// What one request saw. Times in seconds.
struct RequestResult {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error;  // the status message when not OK
  int prompt_tokens = 0;
  int output_tokens = 0;
  int cached_tokens = 0;  // from the final usage
  double ttft = 0;        // send -> first token (only with output_tokens > 0)
  double e2e = 0;         // send -> end of the stream
  // Gaps between consecutive tokens; tokens that arrive in one message
  // after the first have gap 0.
  std::vector<double> itl;
};

// Starts the call at once; `done` runs exactly once, on a gRPC thread, with
// the result, after which the call deletes itself.
void StartStreamCall(v1::Inference::Stub* stub, v1::GenerateRequest request,
                     double timeout_seconds,
                     std::function<void(RequestResult)> done);

}  // namespace moe::loadgen

#endif  // MOE_TOOLS_MOE_LOADGEN_STREAM_CALL_H_
