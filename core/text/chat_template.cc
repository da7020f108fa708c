#include "core/text/chat_template.h"

#include <utility>

#include "core/status_macros.h"
#include "core/text/jinja_eval.h"
#include "core/text/jinja_parser.h"
#include "core/text/jinja_value.h"

namespace moe {

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(absl::string_view source) {
  ASSIGN_OR_RETURN(std::shared_ptr<const jinja::Program> program,
                   jinja::ParseTemplate(source));
  return ChatTemplate(std::move(program));
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatTemplateInputs& inputs) const {
  using jinja::Value;
  std::vector<Value> messages;
  int64_t input_bytes = 0;
  for (const ChatMessage& m : inputs.messages) {
    messages.push_back(Value::Dict({{"role", Value::String(m.role)},
                                    {"content", Value::String(m.content)}}));
    input_bytes += static_cast<int64_t>(m.role.size() + m.content.size());
  }
  // As transformers' apply_chat_template: tools and documents are None when
  // the request has none; every other unknown name is undefined.
  std::vector<std::pair<std::string, Value>> globals = {
      {"messages", Value::List(std::move(messages))},
      {"add_generation_prompt", Value::Bool(inputs.add_generation_prompt)},
      {"bos_token", Value::String(inputs.bos_token)},
      {"eos_token", Value::String(inputs.eos_token)},
      {"tools", Value::None()},
      {"documents", Value::None()},
  };
  jinja::RenderLimits limits;
  // Real conversations may be long: the work budget grows with the input.
  limits.max_bytes += 32 * input_bytes;
  limits.max_steps += 1000 * static_cast<int64_t>(inputs.messages.size());
  return jinja::Render(*program_, std::move(globals), limits);
}

}  // namespace moe
