// moe-cli: the command-line client of the gateway.
//   moe-cli generate --gateway ADDR --prompt-ids 1,2,3 --max-tokens N [--json]
//   moe-cli generate --gateway ADDR --prompt "text" --max-tokens N
//   moe-cli chat --gateway ADDR [--system TEXT] [--message TEXT]
//   moe-cli info --gateway ADDR
//   moe-cli abort --gateway ADDR --request-id ID
// Flags may be spelled with hyphens or underscores. Exit codes: 0, 1 after an
// RPC error (or abort of a request that is not running), 2 for bad flags,
// 128 + signal when Ctrl-C / SIGTERM cancelled a generate call.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/rpc/server_util.h"
#include "core/text/utf8.h"
#include "tools/common/client_security.h"
#include "tools/common/command_line.h"
#include "tools/moe_cli/cli_options.h"
#include "tools/moe_cli/chat_command.h"
#include "tools/moe_cli/generate_command.h"
#include "tools/moe_cli/model_commands.h"

ABSL_FLAG(std::string, gateway, "", "Gateway address, host:port.");
ABSL_FLAG(std::string, prompt_ids, "",
          "generate: comma-separated prompt token ids, e.g. 1,2,3.");
ABSL_FLAG(std::string, prompt, "",
          "generate: the prompt as text (encoded by the gateway's tokenizer).");
ABSL_FLAG(std::string, system, "",
          "chat: a system message that opens the conversation.");
ABSL_FLAG(std::string, message, "",
          "chat: one user message; without it, each line of standard input "
          "is a user turn.");
ABSL_FLAG(int, max_tokens, 16, "generate: tokens to generate at most.");
ABSL_FLAG(double, temperature, 0.0,
          "generate: sampling temperature; 0 = greedy.");
ABSL_FLAG(int, top_k, 0, "generate: keep the k most likely tokens; 0 = off.");
ABSL_FLAG(
    std::optional<double>, top_p, std::nullopt,
    "generate: nucleus mass in (0, 1]; unset = the server default (off).");
ABSL_FLAG(std::optional<double>, repetition_penalty, std::nullopt,
          "generate: Hugging Face repetition penalty; unset = off.");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "generate: sampling seed; unset = chosen by the server.");
ABSL_FLAG(std::string, stop_ids, "",
          "generate: comma-separated token ids that end generation.");
ABSL_FLAG(bool, ignore_eos, false, "generate: do not stop at EOS.");
ABSL_FLAG(int, logprobs, 0,
          "generate: return the top-K log-probabilities of each token.");
ABSL_FLAG(std::string, request_id, "",
          "generate: id for Abort (default: chosen by the server); abort: the "
          "request to end.");
ABSL_FLAG(double, timeout, 0,
          "Deadline of the call in seconds; 0 = none for generate, 30 s for "
          "info and abort.");
ABSL_FLAG(std::string, router, "",
          "rebalance: the router's address, host:port.");
ABSL_FLAG(bool, force, false,
          "rebalance: move experts whenever the predicted imbalance falls, "
          "not only by the router's --rebalance_min_gain.");
ABSL_FLAG(bool, json, false,
          "generate: one JSON line at the end (moe-generate's format); info: "
          "one JSON object.");

namespace {

constexpr char kUsage[] =
    "Client of the moe-cluster gateway.\n"
    "  moe-cli generate --gateway ADDR --prompt-ids 1,2,3 --max-tokens N\n"
    "      [--temperature T --top-k K --top-p P --repetition-penalty R "
    "--seed S\n"
    "       --stop-ids 4,5 --ignore-eos --logprobs K --request-id ID "
    "--timeout SECONDS] [--json]\n"
    "  moe-cli generate --gateway ADDR --prompt \"Once upon a time\" "
    "--max-tokens N [...]\n"
    "  moe-cli chat --gateway ADDR [--system TEXT] [--message TEXT] "
    "[--max-tokens N ...]\n"
    "  moe-cli info --gateway ADDR [--json]\n"
    "  moe-cli abort --gateway ADDR --request-id ID\n"
    "  moe-cli rebalance --router ADDR [--force] [--json]\n"
    "TLS and the bearer token: --tls-ca-file CA.pem [--tls-cert-file CERT.pem "
    "--tls-key-file KEY.pem] --auth-token-file TOKEN";

[[noreturn]] void UsageError(const std::string& message) {
  std::fprintf(stderr, "moe-cli: %s\n", message.c_str());
  std::exit(2);
}

moe::cli::GenerateFlags SamplingFlags() {
  moe::cli::GenerateFlags flags;
  flags.gateway = absl::GetFlag(FLAGS_gateway);
  flags.prompt_ids = absl::GetFlag(FLAGS_prompt_ids);
  flags.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  flags.temperature = absl::GetFlag(FLAGS_temperature);
  flags.top_k = absl::GetFlag(FLAGS_top_k);
  flags.top_p = absl::GetFlag(FLAGS_top_p);
  flags.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  flags.seed = absl::GetFlag(FLAGS_seed);
  flags.stop_ids = absl::GetFlag(FLAGS_stop_ids);
  flags.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  flags.logprobs = absl::GetFlag(FLAGS_logprobs);
  flags.request_id = absl::GetFlag(FLAGS_request_id);
  return flags;
}

moe::cli::GenerateCommand BuildCommand(const moe::cli::GenerateFlags& flags) {
  absl::StatusOr<moe::v1::GenerateRequest> request =
      moe::cli::BuildGenerateRequest(flags);
  if (!request.ok()) UsageError(std::string(request.status().message()));
  moe::cli::GenerateCommand command;
  command.gateway = flags.gateway;
  command.request = *std::move(request);
  command.timeout_seconds = absl::GetFlag(FLAGS_timeout);
  command.json = absl::GetFlag(FLAGS_json);
  return command;
}

int Generate() {
  moe::cli::GenerateFlags flags = SamplingFlags();
  flags.prompt = absl::GetFlag(FLAGS_prompt);
  return moe::cli::RunGenerate(BuildCommand(flags));
}

int Chat() {
  moe::cli::GenerateFlags flags = SamplingFlags();
  if (!flags.prompt_ids.empty() || !absl::GetFlag(FLAGS_prompt).empty()) {
    UsageError("chat: --prompt and --prompt-ids are for generate; chat takes "
               "--system and --message (or user turns on standard input)");
  }
  moe::v1::ChatMessage opening;
  if (const std::string system = absl::GetFlag(FLAGS_system); !system.empty()) {
    opening.set_role("system");
    opening.set_content(system);
  } else {
    // BuildGenerateRequest wants a prompt; the first turn replaces this.
    opening.set_role("user");
  }
  flags.messages.push_back(opening);
  moe::cli::ChatCommand command;
  command.generate = BuildCommand(flags);
  if (opening.role() == "user") command.generate.request.clear_messages();
  command.message = absl::GetFlag(FLAGS_message);
  if (std::optional<size_t> bad = moe::text::FirstInvalidUtf8(command.message)) {
    UsageError(absl::StrCat("--message: invalid UTF-8 at byte ", *bad));
  }
  return moe::cli::RunChat(std::move(command));
}

}  // namespace

int main(int argc, char** argv) {
  moe::BlockTerminationSignals();  // before gRPC starts threads
  absl::StatusOr<std::vector<std::string>> positional =
      moe::tools::ParseToolCommandLine(argc, argv, kUsage, "tools/moe_cli/");
  if (!positional.ok()) UsageError(std::string(positional.status().message()));
  if (absl::Status s = moe::tools::ConfigureClientSecurity(); !s.ok()) {
    UsageError(std::string(s.message()));
  }

  if (positional->empty()) {
    UsageError(
        absl::StrCat("missing command (generate, chat, info, abort or "
                     "rebalance)\n",
                     kUsage));
  }
  const std::string& command = (*positional)[0];
  if (positional->size() > 1) {
    UsageError(absl::StrCat("unexpected argument \"", (*positional)[1], "\""));
  }
  const double timeout = absl::GetFlag(FLAGS_timeout);
  if (!(timeout >= 0)) UsageError("--timeout must be >= 0");
  const std::string gateway = absl::GetFlag(FLAGS_gateway);
  if (command == "generate") return Generate();
  if (command == "chat") return Chat();
  if (command == "rebalance") {
    const std::string router = absl::GetFlag(FLAGS_router);
    if (router.empty()) UsageError("--router is required (host:port)");
    return moe::cli::RunRebalance(router, absl::GetFlag(FLAGS_force), timeout,
                                  absl::GetFlag(FLAGS_json));
  }
  if (command != "info" && command != "abort") {
    UsageError(absl::StrCat(
        "unknown command \"", command,
        "\" (expected generate, chat, info, abort or rebalance)"));
  }
  if (gateway.empty()) UsageError("--gateway is required (host:port)");
  if (command == "info") {
    return moe::cli::RunInfo(gateway, timeout, absl::GetFlag(FLAGS_json));
  }
  const std::string request_id = absl::GetFlag(FLAGS_request_id);
  if (request_id.empty()) UsageError("--request-id is required");
  return moe::cli::RunAbort(gateway, request_id, timeout);
}
