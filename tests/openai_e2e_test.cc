// End-to-end: the gateway's OpenAI-compatible HTTP API on a real 1p1d
// cluster of processes on 127.0.0.1 serving the text test model
// (text_test_model.h), spoken to by clients no one here wrote:
//   * the official `openai` npm client (tests/text/openai_client.js) streams
//     and non-streams a chat completion and a completion, and gets the same
//     ids and text as gRPC and moe-cli;
//   * `curl -N` sees the SSE events in order, ending in `data: [DONE]`;
//   * the same greedy request through HTTP, gRPC and moe-generate (the
//     single-process engine) gives identical tokens;
//   * stop strings end the text before them;
//   * bad requests get OpenAI's error shape with the right status, naming
//     the field, and the next request is served;
//   * a client that goes away mid-stream aborts its request, whose K/V is
//     freed.
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/process_util.h"
#include "tests/reliability_util.h"
#include "tests/test_util.h"
#include "tests/text_test_model.h"

namespace moe {
namespace {

using ::moe::testing::GreedyRequest;
using ::moe::testing::LaunchedCluster;
using ::moe::testing::RunGenerate;
using ::moe::testing::StreamResult;
using ::testing::HasSubstr;
using json = nlohmann::json;

// The context of the served model: long enough that a request cut off by
// its client cannot have finished by itself first.
constexpr int kContext = 32768;

struct HttpReply {
  int status = 0;  // 0: curl failed
  std::string body;
  std::string curl_error;
};

class OpenAiE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const testing::TextTestModel made = testing::MakeTextTestModel(
        MOE_MKMODEL_BIN, MOE_SOURCE_DIR, dir_->Join("model"), kContext);
    if (!made.skip_reason.empty()) {
      skip_reason_ = new std::string(made.skip_reason);
      return;
    }
    ASSERT_TRUE(made.error.empty()) << made.error;
    model_dir_ = new std::string(made.dir);
    cluster_ = LaunchedCluster::Start("deploy/local/1p1d.json", made.dir).release();
    ASSERT_NE(cluster_, nullptr);
    ASSERT_FALSE(cluster_->openai_url().empty())
        << "the launcher announced no OpenAI URL for the gateway";
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete model_dir_;
    model_dir_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (skip_reason_ != nullptr) GTEST_SKIP() << *skip_reason_;
    ASSERT_NE(cluster_, nullptr);
  }

  static std::string Url(const std::string& path) {
    return cluster_->openai_url() + path;
  }

  // Runs tests/text/openai_client.js on `requests`; its "results".
  static json RunOpenAiClient(const json& requests) {
    const std::string spec_path = dir_->Join(absl::StrCat("spec", ++files_, ".json"));
    std::ofstream(spec_path) << json{{"base_url", cluster_->openai_url()},
                                     {"requests", requests}}
                                    .dump();
    const testing::ProcessResult run = testing::RunProcess(
        {"node", std::string(MOE_SOURCE_DIR) + "/tests/text/openai_client.js",
         spec_path});
    EXPECT_EQ(run.exit_code, 0) << run.err;
    const json out = json::parse(run.out, nullptr, false);
    EXPECT_FALSE(out.is_discarded()) << run.out << run.err;
    return out.is_discarded() ? json::array() : out["results"];
  }

  // One HTTP call with curl; `body` is sent as it is (bytes).
  static HttpReply Curl(const std::string& method, const std::string& path,
                        const std::string& body = "",
                        std::vector<std::string> extra = {}) {
    const std::string body_path = dir_->Join(absl::StrCat("body", ++files_));
    const std::string out_path = body_path + ".out";
    std::vector<std::string> argv = {"curl", "-sS", "-o", out_path, "-w",
                                     "%{http_code}", "-X", method};
    if (method == "POST") {
      std::ofstream(body_path, std::ios::binary) << body;
      argv.insert(argv.end(), {"-H", "Content-Type: application/json",
                               "--data-binary", "@" + body_path});
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(Url(path));
    const testing::ProcessResult run = testing::RunProcess(argv);
    HttpReply reply;
    if (run.exit_code != 0 || !absl::SimpleAtoi(run.out, &reply.status)) {
      reply.curl_error = run.err;
      return reply;
    }
    std::ifstream in(out_path, std::ios::binary);
    reply.body.assign(std::istreambuf_iterator<char>(in), {});
    return reply;
  }

  static v1::GenerateRequest ChatRequest(const json& messages, int max_tokens) {
    v1::GenerateRequest request = GreedyRequest({}, max_tokens);
    request.clear_prompt_ids();
    for (const json& m : messages) {
      v1::ChatMessage* message = request.add_messages();
      message->set_role(m["role"].get<std::string>());
      message->set_content(m["content"].get<std::string>());
    }
    return request;
  }
  static v1::GenerateRequest TextRequest(const std::string& prompt,
                                         int max_tokens) {
    v1::GenerateRequest request = GreedyRequest({}, max_tokens);
    request.clear_prompt_ids();
    request.set_prompt(prompt);
    return request;
  }
  static std::string FinishReason(const StreamResult& result) {
    return result.finish_reason == v1::FINISH_REASON_LENGTH ? "length" : "stop";
  }

  static inline testing::TempDir* dir_ = nullptr;
  static inline std::string* model_dir_ = nullptr;
  static inline LaunchedCluster* cluster_ = nullptr;
  static inline std::string* skip_reason_ = nullptr;
  static inline int files_ = 0;
};

TEST_F(OpenAiE2eTest, OpenAiClientGetsTheSameIdsAndTextAsGrpcAndMoeCli) {
  const json messages = json::array(
      {{{"role", "system"}, {"content", "You answer briefly."}},
       {{"role", "user"}, {"content", "What is the capital of France? 🙂"}}});
  const std::string prompt = "Once upon a time, in a land far away,";
  const json chat_params = {{"model", "model"},
                            {"messages", messages},
                            {"max_tokens", 16},
                            {"temperature", 0},
                            {"return_token_ids", true}};
  const json completion_params = {{"model", "model"},
                                  {"prompt", prompt},
                                  {"max_tokens", 16},
                                  {"temperature", 0},
                                  {"return_token_ids", true}};
  json stream_options = {{"stream_options", {{"include_usage", true}}},
                         {"stream", true}};
  json requests = json::array();
  requests.push_back({{"kind", "chat"}, {"params", chat_params}});
  json chat_stream = chat_params;
  chat_stream.update(stream_options);
  requests.push_back({{"kind", "chat"}, {"params", chat_stream}});
  requests.push_back({{"kind", "completion"}, {"params", completion_params}});
  json completion_stream = completion_params;
  completion_stream.update(stream_options);
  requests.push_back({{"kind", "completion"}, {"params", completion_stream}});
  const json results = RunOpenAiClient(requests);
  ASSERT_EQ(results.size(), 4u) << results.dump();

  const StreamResult chat = RunGenerate(cluster_->gateway(), ChatRequest(messages, 16));
  ASSERT_TRUE(chat.status.ok()) << chat.status.error_message();
  const StreamResult completion =
      RunGenerate(cluster_->gateway(), TextRequest(prompt, 16));
  ASSERT_TRUE(completion.status.ok()) << completion.status.error_message();

  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(results[i].dump());
    ASSERT_FALSE(results[i].contains("error"));
    const StreamResult& grpc = i < 2 ? chat : completion;
    EXPECT_EQ(results[i]["token_ids"].get<std::vector<int32_t>>(), grpc.tokens);
    EXPECT_EQ(results[i]["text"].get<std::string>(), grpc.text);
    EXPECT_EQ(results[i]["finish_reason"].get<std::string>(), FinishReason(grpc));
    ASSERT_TRUE(results[i]["usage"].is_object());
    EXPECT_EQ(results[i]["usage"]["prompt_tokens"].get<int>(),
              grpc.usage.prompt_tokens());
    EXPECT_EQ(results[i]["usage"]["completion_tokens"].get<int>(),
              static_cast<int>(grpc.tokens.size()));
    EXPECT_EQ(results[i]["usage"]["total_tokens"].get<int>(),
              grpc.usage.prompt_tokens() + static_cast<int>(grpc.tokens.size()));
    for (const json& chunk : results[i]["chunks"]) {
      EXPECT_TRUE(testing::IsValidUtf8(chunk.get<std::string>()));
    }
  }
  EXPECT_EQ(results[0]["object"], "chat.completion");
  EXPECT_EQ(results[0]["role"], "assistant");
  EXPECT_EQ(results[1]["roles"], json::array({"assistant"}));
  EXPECT_EQ(results[2]["object"], "text_completion");
  // One id for every chunk of a stream.
  for (int i : {1, 3}) {
    const std::vector<std::string> ids = results[i]["ids"];
    ASSERT_FALSE(ids.empty());
    for (const std::string& id : ids) EXPECT_EQ(id, ids.front());
  }

  // moe-cli prints the same, for the completion and for the chat.
  testing::ProcessResult cli = testing::RunProcess(
      {MOE_CLI_BIN, "generate", "--gateway", cluster_->address("gateway"),
       "--prompt", prompt, "--max-tokens", "16", "--json"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  json line = json::parse(cli.out, nullptr, false);
  ASSERT_FALSE(line.is_discarded()) << cli.out;
  EXPECT_EQ(line["output_ids"].get<std::vector<int32_t>>(), completion.tokens);
  EXPECT_EQ(line["text"].get<std::string>(), completion.text);
  cli = testing::RunProcess(
      {MOE_CLI_BIN, "chat", "--gateway", cluster_->address("gateway"),
       "--system", messages[0]["content"].get<std::string>(), "--message",
       messages[1]["content"].get<std::string>(), "--max-tokens", "16",
       "--json"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  line = json::parse(cli.out, nullptr, false);
  ASSERT_FALSE(line.is_discarded()) << cli.out;
  EXPECT_EQ(line["output_ids"].get<std::vector<int32_t>>(), chat.tokens);
  EXPECT_EQ(line["text"].get<std::string>(), chat.text);
}

TEST_F(OpenAiE2eTest, CurlSeesServerSentEventsInOrder) {
  const json body = {
      {"messages", json::array({{{"role", "user"}, {"content", "Hello there!"}}})},
      {"max_tokens", 12},
      {"temperature", 0},
      {"stream", true},
      {"stream_options", {{"include_usage", true}}}};
  const std::string body_path = dir_->Join("sse-body.json");
  std::ofstream(body_path) << body.dump();
  const testing::ProcessResult run = testing::RunProcess(
      {"curl", "-N", "-sS", "-D", dir_->Join("sse-headers"), "-H",
       "Content-Type: application/json", "--data-binary", "@" + body_path,
       Url("/chat/completions")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::ifstream headers_in(dir_->Join("sse-headers"));
  const std::string headers((std::istreambuf_iterator<char>(headers_in)), {});
  EXPECT_THAT(headers, HasSubstr("200"));
  EXPECT_THAT(absl::AsciiStrToLower(headers), HasSubstr("text/event-stream"));

  // Events are "data: ...\n\n".
  ASSERT_TRUE(absl::EndsWith(run.out, "data: [DONE]\n\n")) << run.out;
  std::vector<std::string> events =
      absl::StrSplit(run.out, "\n\n", absl::SkipEmpty());
  ASSERT_GE(events.size(), 4u) << run.out;
  EXPECT_EQ(events.back(), "data: [DONE]");
  events.pop_back();
  std::vector<json> chunks;
  for (const std::string& event : events) {
    ASSERT_TRUE(absl::StartsWith(event, "data: ")) << event;
    chunks.push_back(json::parse(event.substr(6), nullptr, false));
    ASSERT_FALSE(chunks.back().is_discarded()) << event;
    EXPECT_EQ(chunks.back()["object"], "chat.completion.chunk");
    EXPECT_EQ(chunks.back()["id"], chunks.front()["id"]);
  }
  // Role first, then content, then the finish reason, then usage alone.
  EXPECT_EQ(chunks.front()["choices"][0]["delta"]["role"], "assistant");
  const json usage_chunk = chunks.back();
  chunks.pop_back();
  EXPECT_TRUE(usage_chunk["choices"].empty()) << usage_chunk.dump();
  ASSERT_TRUE(usage_chunk["usage"].is_object()) << usage_chunk.dump();
  const json last = chunks.back();
  EXPECT_FALSE(last["choices"][0]["finish_reason"].is_null()) << last.dump();
  std::string text;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const json& choice = chunks[i]["choices"][0];
    if (i + 1 < chunks.size()) EXPECT_TRUE(choice["finish_reason"].is_null());
    if (choice["delta"].contains("content")) {
      text += choice["delta"]["content"].get<std::string>();
    }
  }
  const StreamResult grpc = RunGenerate(
      cluster_->gateway(), ChatRequest(body["messages"], 12));
  ASSERT_TRUE(grpc.status.ok());
  EXPECT_EQ(text, grpc.text);
  EXPECT_EQ(usage_chunk["usage"]["completion_tokens"].get<int>(),
            static_cast<int>(grpc.tokens.size()));
}

TEST_F(OpenAiE2eTest, HttpGrpcAndMoeGenerateGiveIdenticalTokens) {
  const std::vector<int32_t> prompt = {1, 450, 3483, 310, 3444, 338};
  const json body = {{"prompt", prompt},       {"max_tokens", 20},
                     {"temperature", 0},       {"ignore_eos", true},
                     {"return_token_ids", true}};
  const HttpReply http = Curl("POST", "/completions", body.dump());
  ASSERT_EQ(http.status, 200) << http.body << http.curl_error;
  const json response = json::parse(http.body);
  const std::vector<int32_t> http_tokens = response["choices"][0]["token_ids"];
  EXPECT_EQ(response["choices"][0]["finish_reason"], "length");

  v1::GenerateRequest request = GreedyRequest(prompt, 20);
  request.set_ignore_eos(true);
  const StreamResult grpc = RunGenerate(cluster_->gateway(), request);
  ASSERT_TRUE(grpc.status.ok());

  const testing::ProcessResult engine = testing::RunProcess(
      {MOE_GENERATE_BIN, "--model", *model_dir_, "--prompt_ids",
       absl::StrJoin(prompt, ","), "--max_tokens", "20", "--ignore_eos",
       "--json"});
  ASSERT_EQ(engine.exit_code, 0) << engine.err;
  const json engine_line = json::parse(engine.out, nullptr, false);
  ASSERT_FALSE(engine_line.is_discarded()) << engine.out;

  ASSERT_EQ(http_tokens.size(), 20u);
  EXPECT_EQ(http_tokens, grpc.tokens);
  EXPECT_EQ(http_tokens, engine_line["output_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(response["choices"][0]["text"].get<std::string>(), grpc.text);
}

// Chat logprobs: one entry per generated token, the token's text and
// bytes from the model's tokenizer, and the values gRPC streams for the same
// greedy request (the chosen token is the most likely one).
TEST_F(OpenAiE2eTest, ChatLogprobsAreTheGrpcLogprobsWithTokenText) {
  const json messages = json::array({{{"role", "user"}, {"content", "Hi there"}}});
  const json body = {{"messages", messages}, {"max_tokens", 6},
                     {"temperature", 0},     {"ignore_eos", true},
                     {"logprobs", true},     {"top_logprobs", 2},
                     {"return_token_ids", true}};
  const HttpReply http = Curl("POST", "/chat/completions", body.dump());
  ASSERT_EQ(http.status, 200) << http.body << http.curl_error;
  const json choice = json::parse(http.body)["choices"][0];
  const std::vector<int32_t> ids = choice["token_ids"];
  const json& content = choice["logprobs"]["content"];
  ASSERT_EQ(content.size(), ids.size());

  v1::GenerateRequest request = ChatRequest(messages, 6);
  request.set_logprobs(2);
  const StreamResult grpc = RunGenerate(cluster_->gateway(), request);
  ASSERT_TRUE(grpc.status.ok()) << grpc.status.error_message();
  ASSERT_EQ(grpc.logprobs.size(), ids.size());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(*model_dir_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (size_t i = 0; i < ids.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("token ", i));
    const json& entry = content[i];
    absl::StatusOr<std::string> text = (*tokenizer)->Decode({ids[i]}, false);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(entry["token"].get<std::string>(), *text);
    std::vector<int> bytes;
    for (unsigned char c : *text) bytes.push_back(c);
    EXPECT_EQ(entry["bytes"].get<std::vector<int>>(), bytes);
    EXPECT_EQ(entry["logprob"].get<float>(), grpc.logprobs[i].logprob());
    ASSERT_EQ(entry["top_logprobs"].size(), 2u);
    EXPECT_EQ(entry["top_logprobs"][0]["logprob"].get<float>(),
              grpc.logprobs[i].top(0).logprob());
    EXPECT_GE(entry["top_logprobs"][0]["logprob"].get<float>(),
              entry["top_logprobs"][1]["logprob"].get<float>());
    EXPECT_EQ(entry["logprob"].get<float>(),
              entry["top_logprobs"][0]["logprob"].get<float>());
  }
}

TEST_F(OpenAiE2eTest, StopStringsEndTheTextBeforeThem) {
  const std::string prompt = "The capital of France is";
  const json base = {{"prompt", prompt}, {"max_tokens", 24},
                     {"temperature", 0}, {"ignore_eos", true}};
  const HttpReply full = Curl("POST", "/completions", base.dump());
  ASSERT_EQ(full.status, 200) << full.body;
  const std::string text =
      json::parse(full.body)["choices"][0]["text"].get<std::string>();
  ASSERT_GE(text.size(), 12u) << text;
  // A stop string from the middle of the greedy text: the text ends before
  // its first occurrence, streamed or not.
  const std::string stop = text.substr(text.size() / 2, 3);
  const std::string before = text.substr(0, text.find(stop));
  json requests = json::array();
  json params = base;
  params["stop"] = json::array({stop});
  params["model"] = "model";
  requests.push_back({{"kind", "completion"}, {"params", params}});
  params["stream"] = true;
  requests.push_back({{"kind", "completion"}, {"params", params}});
  const json results = RunOpenAiClient(requests);
  ASSERT_EQ(results.size(), 2u);
  for (const json& result : results) {
    SCOPED_TRACE(result.dump());
    ASSERT_FALSE(result.contains("error"));
    EXPECT_EQ(result["text"].get<std::string>(), before);
    EXPECT_EQ(result["finish_reason"], "stop");
  }
}

TEST_F(OpenAiE2eTest, ModelsAndHealth) {
  HttpReply models = Curl("GET", "/models");
  ASSERT_EQ(models.status, 200) << models.body;
  const json list = json::parse(models.body);
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], "model");
  EXPECT_EQ(list["data"][0]["object"], "model");

  // /health is beside /v1.
  std::string base = cluster_->openai_url();
  base.resize(base.size() - 3);
  const testing::ProcessResult health = testing::RunProcess(
      {"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", base + "/health"});
  EXPECT_EQ(health.out, "200") << health.err;
}

struct BadCase {
  std::string name;
  std::string method;
  std::string path;
  std::string body;
  int status;
  std::string param;    // error.param; "" = not checked
  std::string message;  // a part of error.message
};

TEST_F(OpenAiE2eTest, BadRequestsGetOpenAiErrorsNamingTheField) {
  const std::string user = R"({"role":"user","content":"hi"})";
  auto chat = [&](const std::string& fields) {
    return absl::StrCat(R"({"messages":[)", user, "]", fields, "}");
  };
  const std::vector<BadCase> cases = {
      {"malformed JSON", "POST", "/chat/completions", R"({"messages": [)", 400,
       "", "JSON"},
      {"not an object", "POST", "/chat/completions", "[1, 2]", 400, "", "object"},
      {"no messages", "POST", "/chat/completions", R"({"max_tokens": 4})", 400,
       "messages", "messages"},
      {"empty messages", "POST", "/chat/completions", R"({"messages": []})", 400,
       "messages", "messages"},
      {"messages not a list", "POST", "/chat/completions",
       R"({"messages": "hi"})", 400, "messages", "messages"},
      {"unknown role", "POST", "/chat/completions",
       R"({"messages": [{"role": "robot", "content": "x"}]})", 400,
       "messages[0].role", "role"},
      {"content not text", "POST", "/chat/completions",
       R"({"messages": [{"role": "user", "content": 5}]})", 400,
       "messages[0].content", "content"},
      {"template refuses", "POST", "/chat/completions",
       absl::StrCat(R"({"messages":[)", user, ",", user, "]}"), 400, "messages",
       "alternate"},
      {"unknown model", "POST", "/chat/completions",
       chat(R"(,"model":"gpt-4o")"), 404, "model", "gpt-4o"},
      {"max_tokens a string", "POST", "/chat/completions",
       chat(R"(,"max_tokens":"ten")"), 400, "max_tokens", "max_tokens"},
      {"max_tokens zero", "POST", "/chat/completions", chat(R"(,"max_tokens":0)"),
       400, "max_tokens", "max_tokens"},
      {"max_tokens over the context", "POST", "/chat/completions",
       chat(absl::StrCat(R"(,"max_tokens":)", kContext * 2)), 400, "max_tokens",
       "max_tokens"},
      {"temperature negative", "POST", "/chat/completions",
       chat(R"(,"temperature":-1)"), 400, "temperature", "temperature"},
      {"temperature a string", "POST", "/chat/completions",
       chat(R"(,"temperature":"hot")"), 400, "temperature", "temperature"},
      {"top_p zero", "POST", "/chat/completions", chat(R"(,"top_p":0)"), 400,
       "top_p", "top_p"},
      {"n two", "POST", "/chat/completions", chat(R"(,"n":2)"), 400, "n", "n"},
      {"stop a number", "POST", "/chat/completions", chat(R"(,"stop":5)"), 400,
       "stop", "stop"},
      {"top_logprobs too many", "POST", "/chat/completions",
       chat(R"(,"logprobs":true,"top_logprobs":50)"), 400, "top_logprobs",
       "top_logprobs"},
      {"stream not a bool", "POST", "/chat/completions",
       chat(R"(,"stream":"yes")"), 400, "stream", "stream"},
      {"seed a string", "POST", "/chat/completions", chat(R"(,"seed":"x")"), 400,
       "seed", "seed"},
      {"invalid UTF-8", "POST", "/chat/completions",
       "{\"messages\":[{\"role\":\"user\",\"content\":\"bad \xff byte\"}]}", 400,
       "", "UTF-8"},
      {"no prompt", "POST", "/completions", R"({"max_tokens": 4})", 400,
       "prompt", "prompt"},
      {"empty prompt", "POST", "/completions", R"({"prompt": ""})", 400,
       "prompt", "prompt"},
      {"token id out of the vocabulary", "POST", "/completions",
       R"({"prompt": [1, 999999]})", 400, "prompt", "999999"},
      {"prompt a bool", "POST", "/completions", R"({"prompt": true})", 400,
       "prompt", "prompt"},
      {"unknown path", "POST", "/nothing", "{}", 404, "", "/v1/nothing"},
      {"wrong method", "GET", "/chat/completions", "", 405, "", "POST"},
      {"unknown model id", "GET", "/models/other", "", 404, "model", "other"},
  };
  ASSERT_GE(cases.size(), 20u);
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    const HttpReply reply = Curl(c.method, c.path, c.body);
    EXPECT_EQ(reply.status, c.status) << reply.body << reply.curl_error;
    const json error = json::parse(reply.body, nullptr, false);
    ASSERT_FALSE(error.is_discarded()) << reply.body;
    ASSERT_TRUE(error.contains("error") && error["error"].is_object())
        << reply.body;
    ASSERT_TRUE(error["error"]["message"].is_string()) << reply.body;
    EXPECT_THAT(error["error"]["message"].get<std::string>(), HasSubstr(c.message));
    if (!c.param.empty()) {
      EXPECT_EQ(error["error"]["param"], c.param) << reply.body;
    }
    EXPECT_TRUE(error["error"]["type"].is_string()) << reply.body;
    // The next request is served.
    const HttpReply next = Curl("POST", "/completions",
                                R"({"prompt": "ok", "max_tokens": 2})");
    EXPECT_EQ(next.status, 200) << next.body;
  }

  // An oversize body: 413, and the server goes on.
  const HttpReply oversize =
      Curl("POST", "/completions",
           absl::StrCat(R"({"prompt": ")", std::string(9 << 20, 'a'), R"("})"));
  EXPECT_EQ(oversize.status, 413) << oversize.body << oversize.curl_error;
  const HttpReply next = Curl("POST", "/completions",
                              R"({"prompt": "ok", "max_tokens": 2})");
  EXPECT_EQ(next.status, 200) << next.body;
}

TEST_F(OpenAiE2eTest, ClientDisconnectAbortsTheRequestAndFreesItsKv) {
  const std::string metrics = cluster_->metrics_url("gateway");
  ASSERT_FALSE(metrics.empty());
  const std::optional<std::string> before = testing::HttpGet(metrics);
  ASSERT_TRUE(before.has_value());
  const double cancelled_before = testing::SeriesValue(
      *before, "moe_gateway_requests_total", "code=\"CANCELLED\"");

  // A request that would run for the whole context: the client reads two
  // chunks and goes away.
  json params = {{"model", "model"},
                 {"prompt", "Tell me a very long story."},
                 {"max_tokens", kContext - 64},
                 {"ignore_eos", true},
                 {"stream", true}};
  const json results = RunOpenAiClient(json::array(
      {{{"kind", "completion"}, {"params", params}, {"abort_after_chunks", 2}}}));
  ASSERT_EQ(results.size(), 1u);
  ASSERT_FALSE(results[0].contains("error")) << results[0].dump();
  EXPECT_TRUE(results[0]["aborted"].get<bool>());

  // The gateway ends the call as cancelled and the attention servers free
  // its blocks, long before it could have generated the whole context.
  EXPECT_TRUE(testing::WaitForGatewayIdle(metrics));
  EXPECT_TRUE(cluster_->WaitForIdleKv());
  const std::optional<std::string> after = testing::HttpGet(metrics);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(testing::SeriesValue(*after, "moe_gateway_requests_total",
                                 "code=\"CANCELLED\""),
            cancelled_before + 1)
      << *after;
}

}  // namespace
}  // namespace moe
