#ifndef MOE_CORE_TEXT_CHAT_TEMPLATE_H_
#define MOE_CORE_TEXT_CHAT_TEMPLATE_H_

// The chat_template of a Hugging Face tokenizer_config.json: a Jinja
// template that renders a conversation into the prompt text the model was
// trained on.
//
// Parse() accepts the Jinja subset that the chat templates of the families
// we serve use (Mixtral/Mistral, Llama, Qwen2/Qwen3, OLMoE, DeepSeek-V2/V3):
// text, {{ }} / {% %} / {# #} with whitespace control (-) and HF's
// trim_blocks + lstrip_blocks; if/elif/else, for (with loop.index,
// loop.index0, loop.first, loop.last, loop.length, `if` filter, else,
// break/continue), set (including namespace() attribute assignment), macros
// (defaults, keyword arguments; no {% call %}); literals,
// lists, dicts, attribute and subscript access, slices, arithmetic, ~,
// comparisons, and/or/not, in / not in, is [not] defined/none/string/...,
// inline if-else, filters (trim, length, upper, lower, tojson, default,
// first, last, join, replace, ...) and string methods (strip, startswith,
// split, ...), raise_exception(). Anything else is refused by Parse with an
// error naming the construct and its line:column. Rendering is bounded
// (nesting depth, steps, output size), so a hostile template fails with an
// error instead of running away.
//
// A ChatTemplate is immutable and cheap to copy; Render may be called from
// many threads at once.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// The variables a chat template sees.
struct ChatTemplateInputs {
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = false;
  std::string bos_token;  // "" when the tokenizer has none
  std::string eos_token;
};

namespace jinja {
class Program;  // parsed template (core/text/jinja_*.h)
}  // namespace jinja

class ChatTemplate {
 public:
  // Parses `source`. INVALID_ARGUMENT naming the construct and its
  // line:column when it is not valid Jinja or uses an unsupported feature.
  static absl::StatusOr<ChatTemplate> Parse(absl::string_view source);

  // Renders the conversation. A template's raise_exception("...") becomes
  // INVALID_ARGUMENT with that message; a runtime type error (e.g. adding a
  // list to a string) is INVALID_ARGUMENT naming its line:column.
  absl::StatusOr<std::string> Render(const ChatTemplateInputs& inputs) const;

 private:
  explicit ChatTemplate(std::shared_ptr<const jinja::Program> program)
      : program_(std::move(program)) {}
  std::shared_ptr<const jinja::Program> program_;
};

}  // namespace moe

#endif  // MOE_CORE_TEXT_CHAT_TEMPLATE_H_
