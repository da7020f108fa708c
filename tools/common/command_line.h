// Command-line handling shared by the tools: hyphenated flag spellings and
// flag errors reported as a Status (so that a tool can exit with 2 and its
// own message, where absl::ParseCommandLine would exit with 1).
#ifndef MOE_TOOLS_COMMON_COMMAND_LINE_H_
#define MOE_TOOLS_COMMON_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::tools {

// Rewrites flag names spelled with hyphens to the underscores Abseil flags
// use: "--max-tokens=4" -> "--max_tokens=4", "--prompt-ids" -> "--prompt_ids"
// (also with a single leading '-'). Only the name is rewritten, never the
// value after '='. Left untouched: args[0], positional arguments, everything
// after a bare "--", and the argument following a flag that takes its value
// separately ("--request-id --x-y" keeps "--x-y"), as told by
// `takes_separate_value(canonical_name)`.
std::vector<std::string> RewriteFlagNames(
    const std::vector<std::string>& args,
    absl::FunctionRef<bool(absl::string_view name)> takes_separate_value);

// The same, asking the Abseil flag registry: a defined non-boolean flag
// takes the next argument as its value when given without '='.
std::vector<std::string> RewriteFlagNames(const std::vector<std::string>& args);

// Checks and applies `args` (args[0] is the program) against the registered
// Abseil flags like absl::ParseCommandLine, but returns INVALID_ARGUMENT
// naming the flag for an unknown flag, a missing value or a value that does
// not parse ("--max_tokens: ..."). Returns the positional arguments (without
// args[0]). Flags are applied in order, so a later call to
// absl::ParseCommandLine on the same arguments sets the same values; the
// usage flags (--help, --helpfull, ...) are left to that call.
absl::StatusOr<std::vector<std::string>> ApplyFlags(
    const std::vector<std::string>& args);

// argv as strings.
std::vector<std::string> ArgsFromArgv(int argc, char** argv);

// absl::ParseCommandLine on argv with hyphenated flag names rewritten
// (RewriteFlagNames), for the programs that keep Abseil's own flag errors
// (the servers, moe-generate, moe-mkmodel): "--http-port 0" is
// "--http_port 0". Returns what absl::ParseCommandLine returns (argv[0] and
// the positional arguments), pointing into storage that lives as long as
// the process. Call once, from main.
std::vector<char*> ParseCommandLineWithHyphens(int argc, char** argv);

// What a tool's main does with its command line: sets the usage message and
// limits --help to the flags defined under `source_dir` (e.g.
// "tools/moe_cli/") and the shared flags of core/security/ and tools/common/
// (TLS, --auth_token_file) when the tool links them, rewrites hyphenated names, checks every flag with
// ApplyFlags (INVALID_ARGUMENT naming the flag), then lets
// absl::ParseCommandLine handle the usage flags. Returns the positional
// arguments.
absl::StatusOr<std::vector<std::string>> ParseToolCommandLine(
    int argc, char** argv, absl::string_view usage,
    absl::string_view source_dir);

}  // namespace moe::tools

#endif  // MOE_TOOLS_COMMON_COMMAND_LINE_H_
