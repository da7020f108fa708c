// Turning moe-cli's flag values into requests: checks that name the flag as
// the user spells it ("--prompt-ids: ..."), no I/O.
#ifndef MOE_TOOLS_MOE_CLI_CLI_OPTIONS_H_
#define MOE_TOOLS_MOE_CLI_CLI_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "moe/v1/generate.pb.h"

namespace moe::cli {

// "1,2,3" -> {1, 2, 3} (whitespace around entries allowed; "" -> {}).
// INVALID_ARGUMENT "--FLAG: "x" is not an integer token id" otherwise.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view flag,
                                                   absl::string_view text);

// The flag values of `moe-cli generate`, as given.
struct GenerateFlags {
  std::string gateway;
  std::string prompt_ids;
  std::string prompt;  // text (the gateway's tokenizer encodes it)
  // A chat (moe-cli chat): rendered by the gateway's chat template.
  std::vector<moe::v1::ChatMessage> messages;
  int max_tokens = 16;
  double temperature = 0;
  int top_k = 0;
  std::optional<double> top_p;
  std::optional<double> repetition_penalty;
  std::optional<uint64_t> seed;
  std::string stop_ids;
  bool ignore_eos = false;
  int logprobs = 0;
  std::string request_id;
};

// The request; top_p, repetition_penalty and seed are set only when given.
// INVALID_ARGUMENT naming the flag for a missing --gateway, a prompt that is
// not exactly one of --prompt-ids, --prompt and messages,
// malformed id lists, or a negative --max-tokens / --top-k / --logprobs.
// Everything else (vocabulary range, NaN) is the gateway's to judge.
absl::StatusOr<moe::v1::GenerateRequest> BuildGenerateRequest(
    const GenerateFlags& flags);

}  // namespace moe::cli

#endif  // MOE_TOOLS_MOE_CLI_CLI_OPTIONS_H_
