#include "gateway/http/openai_response.h"

#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using json = nlohmann::json;

json Parse(const std::string& s) {
  json j = json::parse(s, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << s;
  return j;
}

OpenAiRequest Request(OpenAiEndpoint endpoint) {
  OpenAiRequest r;
  r.endpoint = endpoint;
  return r;
}

TEST(OpenAiResponseTest, ErrorBodyHasOpenAisShape) {
  const json body = Parse(OpenAiErrorBody(
      MakeOpenAiError(400, "max_tokens: must be >= 1", "max_tokens")));
  EXPECT_EQ(body["error"]["message"], "max_tokens: must be >= 1");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "max_tokens");
  EXPECT_TRUE(body["error"]["code"].is_null());
}

TEST(OpenAiResponseTest, StatusCodesBecomeHttpStatuses) {
  struct Case {
    absl::StatusCode code;
    int http;
  };
  for (const Case c : {Case{absl::StatusCode::kInvalidArgument, 400},
                       Case{absl::StatusCode::kFailedPrecondition, 400},
                       Case{absl::StatusCode::kOutOfRange, 400},
                       Case{absl::StatusCode::kNotFound, 404},
                       Case{absl::StatusCode::kUnauthenticated, 401},
                       Case{absl::StatusCode::kResourceExhausted, 429},
                       Case{absl::StatusCode::kUnavailable, 503},
                       Case{absl::StatusCode::kDeadlineExceeded, 504},
                       Case{absl::StatusCode::kInternal, 500}}) {
    EXPECT_EQ(OpenAiErrorFromStatus(absl::Status(c.code, "x"), nullptr).http_status,
              c.http);
  }
}

TEST(OpenAiResponseTest, ProtoFieldsAreNamedAsOpenAiNamesThem) {
  const OpenAiRequest chat = Request(OpenAiEndpoint::kChatCompletions);
  OpenAiRequest completion = Request(OpenAiEndpoint::kCompletions);
  auto param = [](const std::string& message, const OpenAiRequest& r) {
    return OpenAiErrorFromStatus(absl::InvalidArgumentError(message), &r).param;
  };
  EXPECT_EQ(param("prompt_ids[1]: token id 999999 is outside", completion),
            "prompt");
  EXPECT_EQ(param("prompt_ids: the prompt's 9 tokens leave no room", chat),
            "messages");
  EXPECT_EQ(param("messages: the chat template refused them: x", chat),
            "messages");
  EXPECT_EQ(param("messages[0].role: must be", chat), "messages[0].role");
  EXPECT_EQ(param("sampling.top_p must be in (0, 1], got 0", chat), "top_p");
  EXPECT_EQ(param("logprobs: must be in [0, 20]", chat), "top_logprobs");
  EXPECT_EQ(param("logprobs: must be in [0, 20]", completion), "logprobs");
  completion.max_tokens_field = "max_completion_tokens";
  EXPECT_EQ(param("max_tokens: prompt (3 tokens) + ...", completion),
            "max_completion_tokens");
  EXPECT_EQ(param("prompt_ids, prompt, messages: exactly one", chat), "");
  EXPECT_EQ(param("gateway is draining", chat), "");
}

TEST(OpenAiResponseTest, ChatChunksAndWholeResponse) {
  OpenAiRequest request = Request(OpenAiEndpoint::kChatCompletions);
  request.stream = true;
  request.include_usage = true;
  request.return_token_ids = true;
  OpenAiFormatter formatter(request, "chatcmpl-1", 123, "model", nullptr);
  const json role = Parse(formatter.RoleChunk());
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());
  ChoiceOutput piece;
  piece.text = "Hi";
  piece.token_ids = {5, 6};
  const json chunk = Parse(formatter.Chunk(piece));
  EXPECT_EQ(chunk["id"], "chatcmpl-1");
  EXPECT_EQ(chunk["created"], 123);
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "Hi");
  EXPECT_EQ(chunk["choices"][0]["token_ids"], json::array({5, 6}));
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(chunk["usage"].is_null());
  ChoiceOutput last;
  last.finish_reason = "length";
  const json end = Parse(formatter.Chunk(last));
  EXPECT_EQ(end["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(end["choices"][0]["delta"].contains("content"));
  const json usage = Parse(formatter.UsageChunk({10, 2, 4}));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 12);
  EXPECT_EQ(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

  request.stream = false;
  OpenAiFormatter whole(request, "chatcmpl-2", 1, "model", nullptr);
  piece.finish_reason = "stop";
  const json body = Parse(whole.Whole(piece, {3, 2, 0}));
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hi");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["usage"]["completion_tokens"], 2);
}

TEST(OpenAiResponseTest, LogprobsInBothShapes) {
  v1::TokenLogprobs token;
  token.set_token_id(7);
  token.set_logprob(-0.5f);
  v1::TopLogprob* top = token.add_top();
  top->set_token_id(7);
  top->set_logprob(-0.5f);
  top = token.add_top();
  top->set_token_id(8);
  top->set_logprob(-1.5f);
  ChoiceOutput piece;
  piece.text = "x";
  piece.logprobs = {token};

  OpenAiRequest chat = Request(OpenAiEndpoint::kChatCompletions);
  chat.logprobs = true;
  chat.top_logprobs = 1;
  OpenAiFormatter chat_formatter(chat, "c", 1, "model", nullptr);
  const json c = Parse(chat_formatter.Whole(piece, {}));
  const json& entry = c["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(entry["token"], "token_id:7");
  EXPECT_FLOAT_EQ(entry["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(entry["top_logprobs"].size(), 1u);
  EXPECT_TRUE(entry["bytes"].is_array());

  OpenAiRequest completion = Request(OpenAiEndpoint::kCompletions);
  completion.logprobs = true;
  completion.top_logprobs = 2;
  OpenAiFormatter completion_formatter(completion, "c", 1, "model", nullptr);
  const json p = Parse(completion_formatter.Whole(piece, {}));
  const json& lp = p["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json::array({"token_id:7"}));
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
  EXPECT_EQ(lp["text_offset"], json::array({0}));
}

TEST(OpenAiResponseTest, Models) {
  const json list = Parse(ModelListBody("model", 5));
  EXPECT_EQ(list["object"], "list");
  EXPECT_EQ(list["data"][0]["id"], "model");
  EXPECT_EQ(list["data"][0]["object"], "model");
}

}  // namespace
}  // namespace moe
