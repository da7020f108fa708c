#include "tools/common/command_line.h"

#include <optional>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace moe::tools {
namespace {

// One "-name", "--name" or "--name=value" argument.
struct FlagArg {
  size_t name_begin = 0;  // after the dashes
  std::string name;
  std::optional<std::string> value;  // after '=', when given that way
};

std::optional<FlagArg> SplitFlag(absl::string_view arg) {
  if (arg.size() < 2 || arg[0] != '-') return std::nullopt;  // "-" too
  FlagArg flag;
  flag.name_begin = arg[1] == '-' ? 2 : 1;
  absl::string_view rest = arg.substr(flag.name_begin);
  const size_t eq = rest.find('=');
  flag.name = std::string(rest.substr(0, eq));
  if (eq != absl::string_view::npos) {
    flag.value = std::string(rest.substr(eq + 1));
  }
  return flag;
}

// Handled by absl::ParseCommandLine itself, outside the flag registry.
bool IsUsageFlag(absl::string_view name) {
  for (absl::string_view usage :
       {"help", "helpfull", "helpshort", "helppackage", "helpon", "helpmatch",
        "version", "only_check_args"}) {
    if (name == usage) return true;
  }
  return false;
}

bool IsBoolFlag(const absl::CommandLineFlag* flag) {
  return flag != nullptr && flag->IsOfType<bool>();
}

}  // namespace

std::vector<std::string> RewriteFlagNames(
    const std::vector<std::string>& args,
    absl::FunctionRef<bool(absl::string_view name)> takes_separate_value) {
  std::vector<std::string> out;
  out.reserve(args.size());
  bool next_is_value = false;
  bool positional_only = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (i == 0 || positional_only || next_is_value) {
      out.push_back(arg);
      next_is_value = false;
      continue;
    }
    if (arg == "--") {
      positional_only = true;
      out.push_back(arg);
      continue;
    }
    std::optional<FlagArg> flag = SplitFlag(arg);
    if (!flag.has_value()) {
      out.push_back(arg);
      continue;
    }
    const std::string name = absl::StrReplaceAll(flag->name, {{"-", "_"}});
    std::string rewritten = arg.substr(0, flag->name_begin) + name;
    if (flag->value.has_value()) {
      absl::StrAppend(&rewritten, "=", *flag->value);
    } else {
      next_is_value = takes_separate_value(name);
    }
    out.push_back(std::move(rewritten));
  }
  return out;
}

std::vector<std::string> RewriteFlagNames(
    const std::vector<std::string>& args) {
  return RewriteFlagNames(args, [](absl::string_view name) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    return flag != nullptr && !flag->IsOfType<bool>();
  });
}

absl::StatusOr<std::vector<std::string>> ApplyFlags(
    const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      positional.insert(positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    std::optional<FlagArg> parsed = SplitFlag(arg);
    if (!parsed.has_value()) {
      positional.push_back(arg);
      continue;
    }
    const std::string dashed = absl::StrCat("--", parsed->name);
    if (IsUsageFlag(parsed->name)) continue;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(parsed->name);
    if (flag == nullptr || flag->IsRetired()) {
      // --nofoo for a boolean --foo.
      if (!parsed->value.has_value() && absl::StartsWith(parsed->name, "no")) {
        absl::CommandLineFlag* negated =
            absl::FindCommandLineFlag(parsed->name.substr(2));
        if (IsBoolFlag(negated)) {
          std::string error;
          negated->ParseFrom("false", &error);
          continue;
        }
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", dashed, " (see --help)"));
    }
    std::string value;
    if (parsed->value.has_value()) {
      value = *parsed->value;
    } else if (IsBoolFlag(flag)) {
      value = "true";
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(dashed, ": missing value"));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat(dashed, ": ", error));
    }
  }
  return positional;
}

namespace {
// Where the flags a tool may share with others are defined: the TLS flags
// and the clients' --auth_token_file.
constexpr absl::string_view kSharedClientFlagsDirs[] = {"core/security/",
                                                       "tools/common/"};
}  // namespace

std::vector<std::string> ArgsFromArgv(int argc, char** argv) {
  return std::vector<std::string>(argv, argv + argc);
}

std::vector<char*> ParseCommandLineWithHyphens(int argc, char** argv) {
  // Kept for the process's life: Abseil's positional results point here.
  static std::vector<std::string>* const args =
      new std::vector<std::string>(RewriteFlagNames(ArgsFromArgv(argc, argv)));
  static std::vector<char*>* const c_args = [] {
    auto* pointers = new std::vector<char*>();
    for (std::string& arg : *args) pointers->push_back(arg.data());
    return pointers;
  }();
  return absl::ParseCommandLine(static_cast<int>(c_args->size()),
                                c_args->data());
}

absl::StatusOr<std::vector<std::string>> ParseToolCommandLine(
    int argc, char** argv, absl::string_view usage,
    absl::string_view source_dir) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [dir = std::string(source_dir)](
                                   absl::string_view path) {
    return absl::StrContains(path, dir) ||
           absl::StrContains(path, kSharedClientFlagsDirs[0]) ||
           absl::StrContains(path, kSharedClientFlagsDirs[1]);
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
  std::vector<std::string> args = RewriteFlagNames(ArgsFromArgv(argc, argv));
  absl::StatusOr<std::vector<std::string>> positional = ApplyFlags(args);
  if (!positional.ok()) return positional.status();
  std::vector<char*> c_args;
  for (std::string& arg : args) c_args.push_back(arg.data());
  absl::ParseCommandLine(static_cast<int>(c_args.size()), c_args.data());
  return positional;
}

}  // namespace moe::tools
