#include "gateway/http/openai_response.h"

#include <cctype>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace moe {
namespace {

using json = nlohmann::json;

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

json NullIfEmpty(const std::string& s) {
  return s.empty() ? json(nullptr) : json(s);
}

std::string TypeFor(int http_status) {
  switch (http_status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 429:
      return "rate_limit_error";
    default:
      return http_status >= 500 ? "server_error" : "invalid_request_error";
  }
}

// The field a message starts with: "FIELD: ..." where FIELD is a path such
// as messages[0].role, or the validator's "sampling.top_p must ...".
std::string LeadingField(absl::string_view message) {
  size_t end = 0;
  while (end < message.size()) {
    const char c = message[end];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
          c == '[' || c == ']')) {
      break;
    }
    ++end;
  }
  if (end == 0) return "";
  const absl::string_view field = message.substr(0, end);
  const absl::string_view rest = message.substr(end);
  if (absl::StartsWith(rest, ": ")) return std::string(field);
  if (absl::StartsWith(field, "sampling.") && absl::StartsWith(rest, " ")) {
    return std::string(field);
  }
  return "";
}

// The OpenAI name of a gateway (proto) field.
std::string OpenAiParam(std::string field, const OpenAiRequest* request) {
  if (field.empty()) return field;
  const bool chat = request != nullptr &&
                    request->endpoint == OpenAiEndpoint::kChatCompletions;
  if (absl::StartsWith(field, "sampling.")) field = field.substr(9);
  if (absl::StartsWith(field, "prompt_ids")) return chat ? "messages" : "prompt";
  if (absl::StartsWith(field, "prompt") && !chat) return "prompt";
  if (field == "max_tokens" && request != nullptr) {
    return request->max_tokens_field;
  }
  if (field == "logprobs" && chat) return "top_logprobs";
  if (field == "request_id" || absl::StrContains(field, ",")) return "";
  return field;
}

}  // namespace

std::string OpenAiErrorBody(const OpenAiError& error) {
  return Dump({{"error",
                {{"message", error.message},
                 {"type", error.type},
                 {"param", NullIfEmpty(error.param)},
                 {"code", NullIfEmpty(error.code)}}}});
}

OpenAiError MakeOpenAiError(int http_status, std::string message,
                            std::string param, std::string code) {
  OpenAiError error;
  error.http_status = http_status;
  error.message = std::move(message);
  error.type = TypeFor(http_status);
  error.param = std::move(param);
  error.code = std::move(code);
  return error;
}

OpenAiError OpenAiErrorFromStatus(const absl::Status& status,
                                  const OpenAiRequest* request) {
  int http = 500;
  std::string code;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      http = 400;
      break;
    case absl::StatusCode::kNotFound:
      http = 404;
      code = "model_not_found";
      break;
    case absl::StatusCode::kUnauthenticated:
      http = 401;
      code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      http = 403;
      break;
    case absl::StatusCode::kResourceExhausted:
      http = 429;
      code = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kUnavailable:
      http = 503;
      break;
    case absl::StatusCode::kDeadlineExceeded:
      http = 504;
      code = "timeout";
      break;
    case absl::StatusCode::kUnimplemented:
      http = 501;
      break;
    default:
      break;
  }
  const std::string message(status.message());
  std::string param;
  if (http == 400 || http == 404) {
    param = OpenAiParam(LeadingField(message), request);
  }
  return MakeOpenAiError(http, message, std::move(param), std::move(code));
}

OpenAiFormatter::OpenAiFormatter(const OpenAiRequest& request, std::string id,
                                 int64_t created, std::string model,
                                 const Tokenizer* tokenizer)
    : endpoint_(request.endpoint),
      stream_(request.stream),
      include_usage_(request.include_usage),
      logprobs_(request.logprobs),
      top_logprobs_(request.top_logprobs),
      return_token_ids_(request.return_token_ids),
      id_(std::move(id)),
      created_(created),
      model_(std::move(model)),
      tokenizer_(tokenizer) {}

std::string OpenAiFormatter::TokenText(int32_t id) const {
  if (tokenizer_ != nullptr) {
    absl::StatusOr<std::string> text =
        tokenizer_->Decode({id}, /*skip_special_tokens=*/false);
    if (text.ok()) return *std::move(text);
  }
  return absl::StrCat("token_id:", id);
}

json OpenAiFormatter::Envelope() const {
  const char* object = chat() ? (stream_ ? "chat.completion.chunk"
                                         : "chat.completion")
                              : "text_completion";
  return {{"id", id_}, {"object", object}, {"created", created_},
          {"model", model_}};
}

json OpenAiFormatter::Logprobs(const std::vector<v1::TokenLogprobs>& logprobs) {
  if (!logprobs_) return nullptr;
  auto bytes = [](const std::string& s) {
    json out = json::array();
    for (unsigned char c : s) out.push_back(static_cast<int>(c));
    return out;
  };
  if (chat()) {
    json content = json::array();
    for (const v1::TokenLogprobs& token : logprobs) {
      const std::string text = TokenText(token.token_id());
      json top = json::array();
      for (int i = 0; i < token.top_size() && i < top_logprobs_; ++i) {
        const std::string alt = TokenText(token.top(i).token_id());
        top.push_back({{"token", alt},
                       {"logprob", token.top(i).logprob()},
                       {"bytes", bytes(alt)}});
      }
      content.push_back({{"token", text},
                         {"logprob", token.logprob()},
                         {"bytes", bytes(text)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json tokens = json::array(), token_logprobs = json::array(),
       top = json::array(), offsets = json::array();
  for (const v1::TokenLogprobs& token : logprobs) {
    const std::string text = TokenText(token.token_id());
    tokens.push_back(text);
    token_logprobs.push_back(token.logprob());
    json alternatives = json::object();
    for (int i = 0; i < token.top_size() && i < top_logprobs_; ++i) {
      alternatives[TokenText(token.top(i).token_id())] = token.top(i).logprob();
    }
    top.push_back(std::move(alternatives));
    offsets.push_back(text_offset_);
    text_offset_ += static_cast<int64_t>(text.size());
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

json OpenAiFormatter::Choice(const ChoiceOutput& output, bool delta) {
  json choice = {{"index", 0}};
  if (chat()) {
    if (delta) {
      json d = json::object();
      if (!output.text.empty() || !output.finish_reason.has_value()) {
        d["content"] = output.text;
      }
      choice["delta"] = std::move(d);
    } else {
      choice["message"] = {{"role", "assistant"}, {"content", output.text}};
    }
  } else {
    choice["text"] = output.text;
  }
  choice["logprobs"] = Logprobs(output.logprobs);
  choice["finish_reason"] = output.finish_reason.has_value()
                                ? json(*output.finish_reason)
                                : json(nullptr);
  if (return_token_ids_) choice["token_ids"] = output.token_ids;
  return choice;
}

std::string OpenAiFormatter::RoleChunk() {
  json chunk = Envelope();
  json choice = {{"index", 0},
                 {"delta", {{"role", "assistant"}, {"content", ""}}},
                 {"logprobs", nullptr},
                 {"finish_reason", nullptr}};
  chunk["choices"] = json::array({std::move(choice)});
  if (include_usage_) chunk["usage"] = nullptr;
  return Dump(chunk);
}

std::string OpenAiFormatter::Chunk(const ChoiceOutput& output) {
  json chunk = Envelope();
  chunk["choices"] = json::array({Choice(output, /*delta=*/true)});
  if (include_usage_) chunk["usage"] = nullptr;
  return Dump(chunk);
}

namespace {
json UsageJson(const OpenAiUsage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}
}  // namespace

std::string OpenAiFormatter::UsageChunk(const OpenAiUsage& usage) {
  json chunk = Envelope();
  chunk["choices"] = json::array();
  chunk["usage"] = UsageJson(usage);
  return Dump(chunk);
}

std::string OpenAiFormatter::Whole(const ChoiceOutput& output,
                                   const OpenAiUsage& usage) {
  json body = Envelope();
  body["choices"] = json::array({Choice(output, /*delta=*/false)});
  body["usage"] = UsageJson(usage);
  return Dump(body);
}

namespace {
json ModelJson(absl::string_view model, int64_t created) {
  return {{"id", std::string(model)},
          {"object", "model"},
          {"created", created},
          {"owned_by", "moe-cluster"}};
}
}  // namespace

std::string ModelBody(absl::string_view model, int64_t created) {
  return Dump(ModelJson(model, created));
}

std::string ModelListBody(absl::string_view model, int64_t created) {
  return Dump({{"object", "list"},
               {"data", json::array({ModelJson(model, created)})}});
}

}  // namespace moe
