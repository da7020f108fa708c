#include "tools/moe_cli/cli_options.h"

#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/status_macros.h"
#include "core/text/utf8.h"

namespace moe::cli {

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view flag,
                                                   absl::string_view text) {
  std::vector<int32_t> ids;
  if (absl::StripAsciiWhitespace(text).empty()) return ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, ": \"", part, "\" is not an integer token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<moe::v1::GenerateRequest> BuildGenerateRequest(
    const GenerateFlags& flags) {
  if (flags.gateway.empty()) {
    return absl::InvalidArgumentError("--gateway is required (host:port)");
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                   ParseTokenIds("prompt-ids", flags.prompt_ids));
  const int prompts = (prompt.empty() ? 0 : 1) +
                      (flags.prompt.empty() ? 0 : 1) +
                      (flags.messages.empty() ? 0 : 1);
  if (prompts == 0) {
    return absl::InvalidArgumentError(
        "--prompt (text) or --prompt-ids (comma-separated token ids, e.g. "
        "1,2,3) is required");
  }
  if (prompts > 1) {
    return absl::InvalidArgumentError(
        "--prompt and --prompt-ids: give one of them, not both");
  }
  // gRPC strings are UTF-8: say which flag is not, before sending.
  if (std::optional<size_t> bad = moe::text::FirstInvalidUtf8(flags.prompt)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--prompt: invalid UTF-8 at byte ", *bad));
  }
  for (const moe::v1::ChatMessage& m : flags.messages) {
    if (std::optional<size_t> bad = moe::text::FirstInvalidUtf8(m.content())) {
      return absl::InvalidArgumentError(
          absl::StrCat(m.role() == "system" ? "--system" : "--message",
                       ": invalid UTF-8 at byte ", *bad));
    }
  }
  ASSIGN_OR_RETURN(std::vector<int32_t> stop,
                   ParseTokenIds("stop-ids", flags.stop_ids));
  if (flags.max_tokens < 0) {
    return absl::InvalidArgumentError("--max-tokens must be >= 0");
  }
  if (flags.top_k < 0) {
    return absl::InvalidArgumentError("--top-k must be >= 0");
  }
  if (flags.logprobs < 0) {
    return absl::InvalidArgumentError("--logprobs must be >= 0");
  }
  moe::v1::GenerateRequest request;
  request.set_request_id(flags.request_id);
  request.mutable_prompt_ids()->Assign(prompt.begin(), prompt.end());
  request.set_prompt(flags.prompt);
  for (const moe::v1::ChatMessage& m : flags.messages) {
    *request.add_messages() = m;
  }
  request.set_max_tokens(flags.max_tokens);
  moe::v1::SamplingParams& sampling = *request.mutable_sampling();
  sampling.set_temperature(static_cast<float>(flags.temperature));
  sampling.set_top_k(flags.top_k);
  if (flags.top_p.has_value()) {
    sampling.set_top_p(static_cast<float>(*flags.top_p));
  }
  if (flags.repetition_penalty.has_value()) {
    sampling.set_repetition_penalty(
        static_cast<float>(*flags.repetition_penalty));
  }
  if (flags.seed.has_value()) sampling.set_seed(*flags.seed);
  request.mutable_stop_token_ids()->Assign(stop.begin(), stop.end());
  request.set_ignore_eos(flags.ignore_eos);
  request.set_logprobs(flags.logprobs);
  return request;
}

}  // namespace moe::cli
