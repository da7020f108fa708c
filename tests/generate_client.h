// A blocking client for one public Generate call, collecting its stream,
// for tests against any gateway.
#ifndef MOE_TESTS_GENERATE_CLIENT_H_
#define MOE_TESTS_GENERATE_CLIENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "grpcpp/support/status.h"
#include "moe/v1/generate.grpc.pb.h"

namespace moe::testing {

// The outcome of one streamed Generate call.
struct StreamResult {
  grpc::Status status;
  std::vector<int32_t> tokens;     // concatenated over the stream
  int responses = 0;               // messages received
  int finish_messages = 0;         // messages carrying a finish reason
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  std::string request_id;          // as echoed by the responses
  bool request_id_consistent = true;
  std::vector<v1::TokenLogprobs> logprobs;
  std::string text;                      // concatenated over the stream
  std::vector<std::string> text_chunks;  // each non-empty response's text
};

// Runs Generate to the end on `stub` (blocking).
StreamResult RunGenerate(v1::Inference::Stub& stub,
                         const v1::GenerateRequest& request,
                         double timeout_seconds = 120);

// A greedy request for `prompt` that ignores EOS.
v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt,
                                  int max_tokens);

}  // namespace moe::testing

#endif  // MOE_TESTS_GENERATE_CLIENT_H_
