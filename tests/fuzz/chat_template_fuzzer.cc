// ChatTemplate::Parse and Render on arbitrary template text (the
// chat_template of a tokenizer_config.json comes with the checkpoint, from
// outside), and the real Mixtral template on arbitrary message contents.
// Nothing may crash, hang or grow without bound: Parse and Render either
// succeed or return an error; the limits on nesting, loop iterations and
// output size are what keep hostile templates bounded.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/text/chat_template.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

moe::ChatTemplateInputs Conversation() {
  moe::ChatTemplateInputs inputs;
  inputs.messages = {{"system", "Be brief."},
                     {"user", "Hi {{ there }} 🙂"},
                     {"assistant", "Hello!"},
                     {"user", "What is 2+2?\n"}};
  inputs.add_generation_prompt = true;
  inputs.bos_token = "<s>";
  inputs.eos_token = "</s>";
  return inputs;
}

const moe::ChatTemplate& Mixtral() {
  static const moe::ChatTemplate* const chat = [] {
    std::ifstream in(MOE_SOURCE_DIR
                     "/tests/data/chat_templates/mixtral-8x7b-instruct-v0.1.jinja");
    std::stringstream text;
    text << in.rdbuf();
    absl::StatusOr<moe::ChatTemplate> parsed = moe::ChatTemplate::Parse(text.str());
    moe::fuzz::CheckOk(parsed.status(), "parsing the Mixtral template");
    return new moe::ChatTemplate(*std::move(parsed));
  }();
  return *chat;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<moe::ChatTemplate> chat = moe::ChatTemplate::Parse(input);
  if (chat.ok()) {
    (void)chat->Render(Conversation());
    moe::ChatTemplateInputs empty;
    (void)chat->Render(empty);
  }
  // The input as the contents of alternating user/assistant turns.
  moe::ChatTemplateInputs turns;
  bool user = true;
  for (absl::string_view part : absl::StrSplit(input, '\0')) {
    turns.messages.push_back({user ? "user" : "assistant", std::string(part)});
    user = !user;
  }
  absl::StatusOr<std::string> rendered = Mixtral().Render(turns);
  moe::fuzz::Check(rendered.ok(),
                   "Mixtral renders any alternating user/assistant turns");
  return 0;
}
