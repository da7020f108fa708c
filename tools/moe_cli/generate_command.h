// `moe-cli generate`: one streaming Generate call against a gateway.
#ifndef MOE_TOOLS_MOE_CLI_GENERATE_COMMAND_H_
#define MOE_TOOLS_MOE_CLI_GENERATE_COMMAND_H_

#include <string>

#include "moe/v1/generate.pb.h"

namespace moe::cli {

struct GenerateCommand {
  std::string gateway;  // host:port
  moe::v1::GenerateRequest request;
  double timeout_seconds = 0;  // deadline of the call; 0 = none
  bool json = false;
};

// Calls moe.v1.Inference/Generate and prints the tokens as they arrive.
// Text mode: for a text prompt (prompt or messages) the generated text as it
// arrives, else "output: 12,57,..." grown (and flushed) per response; then a
// line per token with log-probabilities when they were requested, then a
// summary line: finish reason, request id, the server's usage (tokens;
// queue/prefill/transfer/decode seconds) and what the client measured (time
// to first token; generated tokens per second over the whole call). JSON mode:
// one line at the end, {"finish_reason", "output_ids", "prompt_ids", "usage"}
// (keys sorted as nlohmann writes them, the first three as moe-generate --json
// writes them) plus "logprobs" when requested and "text" for a text prompt
// (or whenever the gateway sent text).
//
// Returns the exit code: 0, 1 after an RPC error ("moe-cli: CODE: message"
// on stderr), 128 + signal when SIGINT/SIGTERM cancelled the call. Those
// signals must be blocked (moe::BlockTerminationSignals) before any thread
// starts; a helper thread waits for them and cancels the call.
int RunGenerate(const GenerateCommand& command);

// RunGenerate, also returning the text the call streamed (for moe-cli chat,
// which keeps the conversation).
struct GenerateOutcome {
  int exit_code = 0;
  std::string text;
};
GenerateOutcome StreamGenerate(const GenerateCommand& command);

}  // namespace moe::cli

#endif  // MOE_TOOLS_MOE_CLI_GENERATE_COMMAND_H_
