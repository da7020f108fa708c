// `moe-cli chat`: a conversation through the gateway's chat template.
#ifndef MOE_TOOLS_MOE_CLI_CHAT_COMMAND_H_
#define MOE_TOOLS_MOE_CLI_CHAT_COMMAND_H_

#include <cstdio>
#include <string>

#include "tools/moe_cli/generate_command.h"

namespace moe::cli {

struct ChatCommand {
  // Gateway, sampling, limits; its messages are the conversation so far
  // (e.g. a system message).
  GenerateCommand generate;
  // One user turn; empty: read user turns from `input`, one per line, until
  // end of input, keeping the whole conversation.
  std::string message;
  std::FILE* input = stdin;
};

// Prints each reply as it arrives (then the summary line). Returns the exit
// code of the first failed turn, else 0.
int RunChat(ChatCommand command);

}  // namespace moe::cli

#endif  // MOE_TOOLS_MOE_CLI_CHAT_COMMAND_H_
