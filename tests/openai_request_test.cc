#include "gateway/http/openai_request.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

absl::StatusOr<OpenAiRequest> Chat(const std::string& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body, "model");
}
absl::StatusOr<OpenAiRequest> Completion(const std::string& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kCompletions, body, "model");
}
std::string ChatWith(const std::string& fields) {
  return R"({"messages":[{"role":"user","content":"hi"}])" + fields + "}";
}

TEST(OpenAiRequestTest, ChatMapsEveryField) {
  absl::StatusOr<OpenAiRequest> r = Chat(R"({
    "model": "model",
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "text", "text": "a"},
                                              {"type": "text", "text": "b"}]}],
    "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9,
    "top_k": 40, "seed": 42, "stop": ["x", "yz"], "n": 1,
    "logprobs": true, "top_logprobs": 3, "stream": true,
    "stream_options": {"include_usage": true}, "ignore_eos": true,
    "return_token_ids": true, "user": "ignored", "frequency_penalty": 0})");
  ASSERT_TRUE(r.ok()) << r.status();
  const v1::GenerateRequest& g = r->generate;
  ASSERT_EQ(g.messages_size(), 2);
  EXPECT_EQ(g.messages(0).role(), "system");
  EXPECT_EQ(g.messages(1).content(), "ab");
  EXPECT_EQ(g.max_tokens(), 7);
  EXPECT_EQ(r->max_tokens_field, "max_completion_tokens");
  EXPECT_TRUE(r->max_tokens_given);
  EXPECT_FLOAT_EQ(g.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(g.sampling().top_p(), 0.9f);
  EXPECT_EQ(g.sampling().top_k(), 40);
  EXPECT_EQ(g.sampling().seed(), 42u);
  EXPECT_EQ(r->stop, (std::vector<std::string>{"x", "yz"}));
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->top_logprobs, 3);
  EXPECT_EQ(g.logprobs(), 3);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_TRUE(g.ignore_eos());
  EXPECT_TRUE(r->return_token_ids);
}

TEST(OpenAiRequestTest, DefaultsFollowOpenAi) {
  absl::StatusOr<OpenAiRequest> chat = Chat(ChatWith(""));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_FLOAT_EQ(chat->generate.sampling().temperature(), 1.0f);
  EXPECT_FALSE(chat->generate.sampling().has_seed());
  EXPECT_FALSE(chat->max_tokens_given);
  EXPECT_EQ(chat->generate.max_tokens(), kDefaultChatMaxTokens);
  EXPECT_FALSE(chat->stream);
  EXPECT_EQ(chat->generate.logprobs(), 0);
  absl::StatusOr<OpenAiRequest> completion =
      Completion(R"({"prompt": "x", "model": null})");
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_EQ(completion->generate.max_tokens(), kDefaultCompletionMaxTokens);
  EXPECT_EQ(completion->generate.prompt(), "x");
}

TEST(OpenAiRequestTest, CompletionPromptShapes) {
  absl::StatusOr<OpenAiRequest> ids = Completion(R"({"prompt": [1, 2, 3]})");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(ids->generate.prompt_ids(), ::testing::ElementsAre(1, 2, 3));
  absl::StatusOr<OpenAiRequest> batch = Completion(R"({"prompt": ["text"]})");
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->generate.prompt(), "text");
  absl::StatusOr<OpenAiRequest> logprobs =
      Completion(R"({"prompt": "x", "logprobs": 0})");
  ASSERT_TRUE(logprobs.ok());
  EXPECT_TRUE(logprobs->logprobs);
  EXPECT_EQ(logprobs->generate.logprobs(), 1);  // the sampled token's
  EXPECT_EQ(logprobs->top_logprobs, 0);
}

struct BadCase {
  OpenAiEndpoint endpoint;
  std::string body;
  std::string field;  // the message's start
};

TEST(OpenAiRequestTest, ErrorsNameTheField) {
  const OpenAiEndpoint kChat = OpenAiEndpoint::kChatCompletions;
  const OpenAiEndpoint kCompletion = OpenAiEndpoint::kCompletions;
  const std::vector<BadCase> cases = {
      {kChat, R"({"messages": [)", "request body"},
      {kChat, "[1, 2]", "request body"},
      {kChat, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
       "request body"},
      {kChat, R"({"max_tokens": 4})", "messages:"},
      {kChat, R"({"messages": []})", "messages:"},
      {kChat, R"({"messages": "hi"})", "messages:"},
      {kChat, R"({"messages": [{"role": "robot", "content": "x"}]})",
       "messages[0].role:"},
      {kChat, R"({"messages": [{"role": "user", "content": 5}]})",
       "messages[0].content:"},
      {kChat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content[0].type:"},
      {kChat, ChatWith(R"(,"max_tokens":"ten")"), "max_tokens:"},
      {kChat, ChatWith(R"(,"max_tokens":0)"), "max_tokens:"},
      {kChat, ChatWith(R"(,"max_completion_tokens":-3)"), "max_completion_tokens:"},
      {kChat, ChatWith(R"(,"temperature":-1)"), "temperature:"},
      {kChat, ChatWith(R"(,"temperature":"hot")"), "temperature:"},
      {kChat, ChatWith(R"(,"top_p":0)"), "top_p:"},
      {kChat, ChatWith(R"(,"top_k":"x")"), "top_k:"},
      {kChat, ChatWith(R"(,"n":2)"), "n:"},
      {kChat, ChatWith(R"(,"stop":5)"), "stop:"},
      {kChat, ChatWith(R"(,"stop":["a", 1])"), "stop:"},
      {kChat, ChatWith(R"(,"logprobs":true,"top_logprobs":50)"), "top_logprobs:"},
      {kChat, ChatWith(R"(,"top_logprobs":2)"), "top_logprobs:"},
      {kChat, ChatWith(R"(,"stream":"yes")"), "stream:"},
      {kChat, ChatWith(R"(,"stream_options":{"include_usage":1})"),
       "stream_options.include_usage:"},
      {kChat, ChatWith(R"(,"seed":"x")"), "seed:"},
      {kChat, ChatWith(R"(,"model":5)"), "model:"},
      {kCompletion, R"({"max_tokens": 4})", "prompt:"},
      {kCompletion, R"({"prompt": ""})", "prompt:"},
      {kCompletion, R"({"prompt": []})", "prompt:"},
      {kCompletion, R"({"prompt": true})", "prompt:"},
      {kCompletion, R"({"prompt": [1, -2]})", "prompt:"},
      {kCompletion, R"({"prompt": [1, 1.5]})", "prompt:"},
      {kCompletion, R"({"prompt": ["a", "b"]})", "prompt:"},
      {kCompletion, R"({"prompt": "x", "logprobs": 21})", "logprobs:"},
      {kCompletion, R"({"prompt": "x", "echo": true})", "echo:"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.body);
    absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(c.endpoint, c.body, "model");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), StartsWith(c.field));
  }
}

TEST(OpenAiRequestTest, BodyErrorsSayWhatIsWrong) {
  EXPECT_THAT(std::string(Chat("{").status().message()), HasSubstr("JSON"));
  EXPECT_THAT(std::string(Chat("[]").status().message()), HasSubstr("object"));
  EXPECT_THAT(std::string(Chat("\"\xc3\"").status().message()),
              HasSubstr("UTF-8"));
}

TEST(OpenAiRequestTest, AnotherModelIsNotFound) {
  absl::StatusOr<OpenAiRequest> r = Chat(ChatWith(R"(,"model":"gpt-4o")"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), StartsWith("model:"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("gpt-4o"));
}

}  // namespace
}  // namespace moe
