// tokenizer_config.json: bos/eos/pad, add_bos_token/add_eos_token,
// chat_template, clean_up_tokenization_spaces.
#include "absl/strings/str_cat.h"
#include "core/text/hf_tokenizer.h"

namespace moe::text {
namespace {

// A special token given as "text", {"content": "text", ...} or null.
absl::StatusOr<std::string> TokenText(const nlohmann::json& config,
                                      const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "tokenizer_config.json: ", key,
      ": expected a string or {\"content\": ...}"));
}

absl::StatusOr<bool> OptionalBool(const nlohmann::json& config, const char* key,
                                  bool fallback) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer_config.json: ", key, ": expected true or false"));
  }
  return it->get<bool>();
}

}  // namespace

absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(
    const nlohmann::json& config,
    const std::function<std::optional<int32_t>(const std::string&)>& token_id) {
  TokenizerConfig out;
  if (config.is_null()) return out;
  if (!config.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json: expected an object");
  }
  struct Slot {
    const char* key;
    std::string* text;
    std::optional<int32_t>* id;
  };
  std::string pad;
  for (const Slot& slot :
       {Slot{"bos_token", &out.special.bos_token, &out.special.bos_id},
        Slot{"eos_token", &out.special.eos_token, &out.special.eos_id},
        Slot{"pad_token", &pad, &out.special.pad_id}}) {
    absl::StatusOr<std::string> text = TokenText(config, slot.key);
    if (!text.ok()) return text.status();
    if (text->empty()) continue;
    *slot.id = token_id(*text);
    if (!slot.id->has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer_config.json: ", slot.key, " \"", *text,
          "\" is not a token of the tokenizer"));
    }
    *slot.text = *text;
  }
  absl::StatusOr<bool> add_bos = OptionalBool(config, "add_bos_token", false);
  if (!add_bos.ok()) return add_bos.status();
  absl::StatusOr<bool> add_eos = OptionalBool(config, "add_eos_token", false);
  if (!add_eos.ok()) return add_eos.status();
  absl::StatusOr<bool> cleanup =
      OptionalBool(config, "clean_up_tokenization_spaces", false);
  if (!cleanup.ok()) return cleanup.status();
  out.special.add_bos_token = *add_bos && out.special.bos_id.has_value();
  out.special.add_eos_token = *add_eos && out.special.eos_id.has_value();
  out.clean_up_tokenization_spaces = *cleanup;

  const auto chat = config.find("chat_template");
  if (chat != config.end() && !chat->is_null()) {
    if (chat->is_string()) {
      out.chat_template = chat->get<std::string>();
    } else if (chat->is_array()) {
      // Named templates: the "default" one.
      for (const nlohmann::json& entry : *chat) {
        if (entry.is_object() && entry.contains("name") &&
            entry["name"].is_string() &&
            entry["name"].get<std::string>() == "default" &&
            entry.contains("template") && entry["template"].is_string()) {
          out.chat_template = entry["template"].get<std::string>();
        }
      }
      if (out.chat_template.empty()) {
        return absl::InvalidArgumentError(
            "tokenizer_config.json: chat_template: a list without a "
            "template named \"default\"");
      }
    } else {
      return absl::InvalidArgumentError(
          "tokenizer_config.json: chat_template: expected a string or a list "
          "of {\"name\", \"template\"}");
    }
  }
  return out;
}

}  // namespace moe::text
