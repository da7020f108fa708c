#include "tools/moe_cli/chat_command.h"

#include <unistd.h>

#include <cstdio>
#include <optional>
#include <utility>

#include "core/text/utf8.h"

namespace moe::cli {
namespace {

// One turn: the user's `text` joins the conversation, the reply streams,
// and (on success) joins it too.
int Turn(GenerateCommand& generate, std::string text) {
  moe::v1::ChatMessage* user = generate.request.add_messages();
  user->set_role("user");
  user->set_content(std::move(text));
  GenerateOutcome outcome = StreamGenerate(generate);
  if (outcome.exit_code != 0) return outcome.exit_code;
  moe::v1::ChatMessage* reply = generate.request.add_messages();
  reply->set_role("assistant");
  reply->set_content(std::move(outcome.text));
  return 0;
}

}  // namespace

int RunChat(ChatCommand command) {
  GenerateCommand& generate = command.generate;
  generate.request.clear_prompt_ids();
  generate.request.clear_prompt();
  if (!command.message.empty()) return Turn(generate, command.message);

  const bool interactive = isatty(fileno(command.input)) != 0;
  std::string line;
  for (;;) {
    if (interactive) {
      std::fputs("you> ", stdout);
      std::fflush(stdout);
    }
    line.clear();
    int c;
    while ((c = std::fgetc(command.input)) != EOF && c != '\n') {
      line.push_back(static_cast<char>(c));
    }
    if (c == EOF && line.empty()) return 0;
    if (line.empty()) continue;
    if (std::optional<size_t> bad = moe::text::FirstInvalidUtf8(line)) {
      std::fprintf(stderr,
                   "moe-cli: that line is not UTF-8 (byte %zu); not sent\n",
                   *bad);
      continue;
    }
    // Request ids name one call; a conversation makes several.
    generate.request.clear_request_id();
    if (const int code = Turn(generate, line); code != 0) return code;
  }
}

}  // namespace moe::cli
