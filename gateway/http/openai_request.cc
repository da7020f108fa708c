#include "gateway/http/openai_request.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/rpc/generate_codec.h"
#include "core/text/utf8.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using json = nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// The member `key`, or null when absent (OpenAI treats null as absent).
const json* Member(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<int64_t>> OptionalInt(const json& object,
                                                   const char* key,
                                                   int64_t min, int64_t max) {
  const json* value = Member(object, key);
  if (value == nullptr) return std::optional<int64_t>();
  const std::string range = absl::StrCat("must be an integer in [", min, ", ",
                                         max, "]");
  if (!value->is_number_integer()) return FieldError(key, range);
  if (value->is_number_unsigned() &&
      value->get<uint64_t>() > static_cast<uint64_t>(max)) {
    return FieldError(key, range);
  }
  const int64_t v = value->get<int64_t>();
  if (v < min || v > max) {
    return FieldError(key, absl::StrCat(range, ", got ", v));
  }
  return std::optional<int64_t>(v);
}

absl::StatusOr<std::optional<double>> OptionalNumber(const json& object,
                                                     const char* key) {
  const json* value = Member(object, key);
  if (value == nullptr) return std::optional<double>();
  if (!value->is_number()) return FieldError(key, "must be a number");
  const double v = value->get<double>();
  if (!std::isfinite(v)) return FieldError(key, "must be finite");
  return std::optional<double>(v);
}

absl::StatusOr<std::optional<bool>> OptionalBool(const json& object,
                                                 const char* key) {
  const json* value = Member(object, key);
  if (value == nullptr) return std::optional<bool>();
  if (!value->is_boolean()) return FieldError(key, "must be a boolean");
  return std::optional<bool>(value->get<bool>());
}

absl::Status AddTokenIds(const json& ids, absl::string_view field,
                         v1::GenerateRequest& request) {
  for (size_t i = 0; i < ids.size(); ++i) {
    const json& id = ids[i];
    if (!id.is_number_integer() ||
        (id.is_number_unsigned() &&
         id.get<uint64_t>() > std::numeric_limits<int32_t>::max()) ||
        id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return FieldError(field, absl::StrCat("token ", i, " (", id.dump(),
                                            ") is not a token id"));
    }
    request.add_prompt_ids(static_cast<int32_t>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

// `prompt`: a string, a list of token ids, or a batch of one of either.
absl::Status ParsePrompt(const json& body, v1::GenerateRequest& request) {
  const json* prompt = Member(body, "prompt");
  if (prompt == nullptr) return FieldError("prompt", "is required");
  const char* kShape =
      "must be a string or a list of token ids (a batch of one at most)";
  const json* one = prompt;
  if (prompt->is_array() && prompt->size() == 1 &&
      ((*prompt)[0].is_string() || (*prompt)[0].is_array())) {
    one = &(*prompt)[0];  // a batch of one
  }
  if (one->is_string()) {
    if (one->get_ref<const std::string&>().empty()) {
      return FieldError("prompt", "must not be empty");
    }
    request.set_prompt(one->get<std::string>());
    return absl::OkStatus();
  }
  if (!one->is_array()) return FieldError("prompt", kShape);
  if (one->empty()) return FieldError("prompt", "must not be empty");
  if ((*one)[0].is_string() || (*one)[0].is_array()) {
    return FieldError("prompt", "batches of several prompts are not supported");
  }
  return AddTokenIds(*one, "prompt", request);
}

// A message's content: a string, or a list of {"type": "text", "text"}
// parts, concatenated.
absl::StatusOr<std::string> MessageContent(const json& message,
                                           const std::string& field) {
  const json* content = Member(message, "content");
  if (content == nullptr) return std::string();
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) {
    return FieldError(field,
                      "must be a string or a list of {\"type\": \"text\"} parts");
  }
  std::string text;
  for (size_t j = 0; j < content->size(); ++j) {
    const json& part = (*content)[j];
    const std::string part_field = absl::StrCat(field, "[", j, "]");
    if (!part.is_object()) return FieldError(part_field, "must be an object");
    const json* type = Member(part, "type");
    if (type == nullptr || !type->is_string() || *type != "text") {
      return FieldError(absl::StrCat(part_field, ".type"),
                        "only \"text\" parts are supported");
    }
    const json* part_text = Member(part, "text");
    if (part_text == nullptr || !part_text->is_string()) {
      return FieldError(absl::StrCat(part_field, ".text"), "must be a string");
    }
    text += part_text->get_ref<const std::string&>();
  }
  return text;
}

absl::Status ParseMessages(const json& body, v1::GenerateRequest& request) {
  const json* messages = Member(body, "messages");
  if (messages == nullptr) return FieldError("messages", "is required");
  if (!messages->is_array()) {
    return FieldError("messages", "must be a list of messages");
  }
  if (messages->empty()) return FieldError("messages", "must not be empty");
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return FieldError(field, "must be an object");
    const json* role = Member(m, "role");
    if (role == nullptr || !role->is_string()) {
      return FieldError(absl::StrCat(field, ".role"), "must be a string");
    }
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";  // OpenAI's newer name for it
    if (r != "system" && r != "user" && r != "assistant") {
      return FieldError(absl::StrCat(field, ".role"),
                        absl::StrCat("must be system, user or assistant, got ",
                                     role->dump(-1, ' ', false,
                                                json::error_handler_t::replace)));
    }
    absl::StatusOr<std::string> content =
        MessageContent(m, absl::StrCat(field, ".content"));
    if (!content.ok()) return content.status();
    v1::ChatMessage* out = request.add_messages();
    out->set_role(std::move(r));
    out->set_content(*std::move(content));
  }
  return absl::OkStatus();
}

absl::Status ParseStop(const json& body, OpenAiRequest& out) {
  const json* stop = Member(body, "stop");
  if (stop == nullptr) return absl::OkStatus();
  if (stop->is_string()) {
    out.stop.push_back(stop->get<std::string>());
  } else if (stop->is_array()) {
    if (stop->size() > kMaxStopStrings) {
      return FieldError("stop", absl::StrCat("at most ", kMaxStopStrings,
                                             " strings"));
    }
    for (const json& s : *stop) {
      if (!s.is_string()) {
        return FieldError("stop", "must be a string or a list of strings");
      }
      out.stop.push_back(s.get<std::string>());
    }
  } else {
    return FieldError("stop", "must be a string or a list of strings");
  }
  return absl::OkStatus();
}

absl::Status ParseSampling(const json& body, OpenAiRequest& out) {
  v1::SamplingParams& s = *out.generate.mutable_sampling();
  absl::StatusOr<std::optional<double>> temperature =
      OptionalNumber(body, "temperature");
  if (!temperature.ok()) return temperature.status();
  if (temperature->has_value() && (**temperature < 0 || **temperature > 2)) {
    return FieldError("temperature",
                      absl::StrCat("must be in [0, 2], got ", **temperature));
  }
  s.set_temperature(static_cast<float>(temperature->value_or(1.0)));
  absl::StatusOr<std::optional<double>> top_p = OptionalNumber(body, "top_p");
  if (!top_p.ok()) return top_p.status();
  if (top_p->has_value()) {
    if (**top_p <= 0 || **top_p > 1) {
      return FieldError("top_p", absl::StrCat("must be in (0, 1], got ", **top_p));
    }
    s.set_top_p(static_cast<float>(**top_p));
  }
  absl::StatusOr<std::optional<int64_t>> top_k =
      OptionalInt(body, "top_k", -1, std::numeric_limits<int32_t>::max());
  if (!top_k.ok()) return top_k.status();
  if (top_k->has_value() && **top_k > 0) {
    s.set_top_k(static_cast<int32_t>(**top_k));  // -1 and 0: disabled
  }
  absl::StatusOr<std::optional<double>> repetition =
      OptionalNumber(body, "repetition_penalty");
  if (!repetition.ok()) return repetition.status();
  if (repetition->has_value()) {
    if (**repetition <= 0) {
      return FieldError("repetition_penalty", "must be > 0");
    }
    s.set_repetition_penalty(static_cast<float>(**repetition));
  }
  if (const json* seed = Member(body, "seed"); seed != nullptr) {
    if (!seed->is_number_integer()) {
      return FieldError("seed", "must be an integer");
    }
    // Negative seeds (allowed by OpenAI) keep their two's complement bits.
    s.set_seed(seed->is_number_unsigned()
                   ? seed->get<uint64_t>()
                   : static_cast<uint64_t>(seed->get<int64_t>()));
  }
  return absl::OkStatus();
}

absl::Status ParseLogprobs(const json& body, OpenAiRequest& out) {
  if (out.endpoint == OpenAiEndpoint::kChatCompletions) {
    absl::StatusOr<std::optional<bool>> logprobs = OptionalBool(body, "logprobs");
    if (!logprobs.ok()) return logprobs.status();
    absl::StatusOr<std::optional<int64_t>> top =
        OptionalInt(body, "top_logprobs", 0, kMaxLogprobs);
    if (!top.ok()) return top.status();
    out.logprobs = logprobs->value_or(false);
    if (top->has_value() && !out.logprobs) {
      return FieldError("top_logprobs", "needs \"logprobs\": true");
    }
    out.top_logprobs = static_cast<int>(top->value_or(0));
  } else {
    absl::StatusOr<std::optional<int64_t>> logprobs =
        OptionalInt(body, "logprobs", 0, kMaxLogprobs);
    if (!logprobs.ok()) return logprobs.status();
    out.logprobs = logprobs->has_value();
    out.top_logprobs = static_cast<int>(logprobs->value_or(0));
  }
  // The service returns the sampled token's logprob with its top ones, so
  // ask for at least one; extra alternatives are not shown.
  if (out.logprobs) out.generate.set_logprobs(std::max(1, out.top_logprobs));
  return absl::OkStatus();
}

absl::Status ParseBody(const json& body, OpenAiRequest& out) {
  const bool chat = out.endpoint == OpenAiEndpoint::kChatCompletions;
  if (chat) {
    if (absl::Status s = ParseMessages(body, out.generate); !s.ok()) return s;
  } else {
    if (absl::Status s = ParsePrompt(body, out.generate); !s.ok()) return s;
  }

  // max_completion_tokens is chat's newer name; either is accepted.
  const char* max_field = "max_tokens";
  if (Member(body, "max_completion_tokens") != nullptr) {
    max_field = "max_completion_tokens";
  }
  absl::StatusOr<std::optional<int64_t>> max_tokens =
      OptionalInt(body, max_field, 1, std::numeric_limits<int32_t>::max());
  if (!max_tokens.ok()) return max_tokens.status();
  out.max_tokens_field = max_field;
  out.max_tokens_given = max_tokens->has_value();
  out.generate.set_max_tokens(static_cast<int32_t>(max_tokens->value_or(
      chat ? kDefaultChatMaxTokens : kDefaultCompletionMaxTokens)));

  absl::StatusOr<std::optional<int64_t>> n =
      OptionalInt(body, "n", 1, std::numeric_limits<int32_t>::max());
  if (!n.ok()) return n.status();
  if (n->value_or(1) != 1) {
    return FieldError("n", "only n = 1 is supported");
  }
  if (!chat) {
    absl::StatusOr<std::optional<int64_t>> best_of =
        OptionalInt(body, "best_of", 1, 1);
    if (!best_of.ok()) return FieldError("best_of", "only 1 is supported");
    absl::StatusOr<std::optional<bool>> echo = OptionalBool(body, "echo");
    if (!echo.ok()) return echo.status();
    if (echo->value_or(false)) return FieldError("echo", "is not supported");
  }

  if (absl::Status s = ParseSampling(body, out); !s.ok()) return s;
  if (absl::Status s = ParseStop(body, out); !s.ok()) return s;
  if (absl::Status s = ParseLogprobs(body, out); !s.ok()) return s;

  absl::StatusOr<std::optional<bool>> stream = OptionalBool(body, "stream");
  if (!stream.ok()) return stream.status();
  out.stream = stream->value_or(false);
  if (const json* options = Member(body, "stream_options"); options != nullptr) {
    if (!options->is_object()) {
      return FieldError("stream_options", "must be an object");
    }
    absl::StatusOr<std::optional<bool>> usage =
        OptionalBool(*options, "include_usage");
    if (!usage.ok()) return FieldError("stream_options.include_usage",
                                       "must be a boolean");
    out.include_usage = usage->value_or(false);
  }

  // vLLM's extensions, which the tests and benchmarks use.
  absl::StatusOr<std::optional<bool>> ignore_eos = OptionalBool(body, "ignore_eos");
  if (!ignore_eos.ok()) return ignore_eos.status();
  out.generate.set_ignore_eos(ignore_eos->value_or(false));
  absl::StatusOr<std::optional<bool>> token_ids =
      OptionalBool(body, "return_token_ids");
  if (!token_ids.ok()) return token_ids.status();
  out.return_token_ids = token_ids->value_or(false);
  absl::StatusOr<std::optional<bool>> keep_special =
      OptionalBool(body, "skip_special_tokens");
  if (!keep_special.ok()) return keep_special.status();
  out.generate.set_keep_special_tokens_in_text(!keep_special->value_or(true));
  if (const json* ids = Member(body, "stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) {
      return FieldError("stop_token_ids", "must be a list of token ids");
    }
    for (const json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return FieldError("stop_token_ids", "must be a list of token ids");
      }
      out.generate.add_stop_token_ids(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint,
                                                 absl::string_view body,
                                                 absl::string_view served_model) {
  // nlohmann accepts invalid UTF-8 inside strings (and would throw when
  // writing it back): refuse it first.
  if (const std::optional<size_t> bad = text::FirstInvalidUtf8(body); bad.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request body: invalid UTF-8 at byte ", *bad));
  }
  const json parsed = json::parse(body.begin(), body.end(), nullptr,
                                  /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return absl::InvalidArgumentError("request body: malformed JSON");
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError("request body: must be a JSON object");
  }
  OpenAiRequest out;
  out.endpoint = endpoint;
  if (const json* model = Member(parsed, "model"); model != nullptr) {
    if (!model->is_string()) return FieldError("model", "must be a string");
    const std::string& name = model->get_ref<const std::string&>();
    if (name != served_model) {
      return absl::NotFoundError(absl::StrCat(
          "model: the model '", name, "' does not exist; this server serves '",
          served_model, "'"));
    }
  }
  if (absl::Status s = ParseBody(parsed, out); !s.ok()) return s;
  return out;
}

}  // namespace moe
