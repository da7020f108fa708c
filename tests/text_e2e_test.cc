// End-to-end: text in, text out over gRPC, on a real 1p1d cluster of
// processes on 127.0.0.1 serving the text test model (text_test_model.h).
//   * A text prompt gives the same greedy tokens as its ids (encoded here
//     with the same tokenizer), and the streamed text is the decoding of the
//     streamed ids, in whole characters.
//   * Chat messages are the template's rendering, encoded without extra
//     special tokens.
//   * moe-cli prints the same text and ids as the gRPC stream.
//   * Bad text requests name the field, and the next request is served.
#include <memory>
#include <string>
#include <vector>

#include "core/text/chat_template.h"
#include "core/text/tokenizer.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/process_util.h"
#include "tests/test_util.h"
#include "tests/text_test_model.h"

namespace moe {
namespace {

using ::moe::testing::GreedyRequest;
using ::moe::testing::LaunchedCluster;
using ::moe::testing::RunGenerate;
using ::moe::testing::StreamResult;
using ::testing::HasSubstr;

class TextE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const testing::TextTestModel made = testing::MakeTextTestModel(
        MOE_MKMODEL_BIN, MOE_SOURCE_DIR, dir_->Join("model"));
    if (!made.skip_reason.empty()) {
      skip_reason_ = new std::string(made.skip_reason);
      return;
    }
    ASSERT_TRUE(made.error.empty()) << made.error;
    const std::string& model = made.dir;
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(model);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
    cluster_ = LaunchedCluster::Start("deploy/local/1p1d.json", model).release();
    ASSERT_NE(cluster_, nullptr);
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete tokenizer_;
    tokenizer_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (skip_reason_ != nullptr) GTEST_SKIP() << *skip_reason_;
    ASSERT_NE(cluster_, nullptr);
  }

  static v1::GenerateRequest TextRequest(const std::string& prompt,
                                         int max_tokens) {
    v1::GenerateRequest request = GreedyRequest({}, max_tokens);
    request.clear_prompt_ids();
    request.set_prompt(prompt);
    return request;
  }
  static std::vector<int32_t> Encode(const std::string& text, bool special) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text, special);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }

  static inline testing::TempDir* dir_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
  static inline LaunchedCluster* cluster_ = nullptr;
  static inline std::string* skip_reason_ = nullptr;
};

TEST_F(TextE2eTest, TextPromptEqualsItsIdsAndTheTextIsTheirDecoding) {
  for (const std::string prompt :
       {"The capital of France is", "  leading spaces and\ttabs\n\nnew lines",
        "Ünïcödé, 中文字符, emoji 🙂👍🏽 and <s> written out"}) {
    SCOPED_TRACE(prompt);
    const StreamResult text = RunGenerate(cluster_->gateway(), TextRequest(prompt, 24));
    ASSERT_TRUE(text.status.ok()) << text.status.error_message();
    const std::vector<int32_t> ids = Encode(prompt, /*special=*/true);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), tokenizer_->special_tokens().bos_id.value_or(-1));
    const StreamResult by_ids =
        RunGenerate(cluster_->gateway(), GreedyRequest(ids, 24));
    ASSERT_TRUE(by_ids.status.ok()) << by_ids.status.error_message();
    EXPECT_EQ(text.tokens, by_ids.tokens);
    EXPECT_EQ(text.usage.prompt_tokens(), static_cast<int>(ids.size()));

    absl::StatusOr<std::string> decoded =
        tokenizer_->Decode(text.tokens, /*skip_special_tokens=*/true);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(text.text, *decoded);
    for (const std::string& chunk : text.text_chunks) {
      EXPECT_TRUE(testing::IsValidUtf8(chunk)) << "chunk is not whole UTF-8: " << chunk;
    }
    // An id request gets text as well.
    EXPECT_EQ(by_ids.text, *decoded);
  }
}

TEST_F(TextE2eTest, ChatMessagesAreTheTemplateRendering) {
  v1::GenerateRequest request = GreedyRequest({}, 16);
  request.clear_prompt_ids();
  ChatTemplateInputs inputs;
  inputs.add_generation_prompt = true;
  inputs.bos_token = tokenizer_->special_tokens().bos_token;
  inputs.eos_token = tokenizer_->special_tokens().eos_token;
  for (const auto& [role, content] :
       std::vector<std::pair<std::string, std::string>>{
           {"user", "What is 2 + 2?"}, {"assistant", "4."},
           {"user", "And {{ 3 + 3 }}?"}}) {
    v1::ChatMessage* m = request.add_messages();
    m->set_role(role);
    m->set_content(content);
    inputs.messages.push_back(ChatMessage{role, content});
  }
  absl::StatusOr<ChatTemplate> chat =
      ChatTemplate::Parse(tokenizer_->chat_template());
  ASSERT_TRUE(chat.ok()) << chat.status();
  absl::StatusOr<std::string> rendered = chat->Render(inputs);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_THAT(*rendered, HasSubstr("[INST] And {{ 3 + 3 }}? [/INST]"));
  const std::vector<int32_t> ids = Encode(*rendered, /*special=*/false);

  const StreamResult chat_result = RunGenerate(cluster_->gateway(), request);
  ASSERT_TRUE(chat_result.status.ok()) << chat_result.status.error_message();
  const StreamResult by_ids = RunGenerate(cluster_->gateway(), GreedyRequest(ids, 16));
  ASSERT_TRUE(by_ids.status.ok());
  EXPECT_EQ(chat_result.tokens, by_ids.tokens);
  EXPECT_EQ(chat_result.usage.prompt_tokens(), static_cast<int>(ids.size()));
  EXPECT_EQ(chat_result.text, by_ids.text);

  // Mixtral's template refuses roles out of order, naming why.
  v1::GenerateRequest bad = request;
  bad.mutable_messages(1)->set_role("user");
  const StreamResult refused = RunGenerate(cluster_->gateway(), bad);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.status.error_message(),
              HasSubstr("roles must alternate user/assistant"));
}

TEST_F(TextE2eTest, MoeCliPrintsTheSameTextAndIds) {
  const std::string prompt = "Once upon a time";
  const StreamResult grpc_result =
      RunGenerate(cluster_->gateway(), TextRequest(prompt, 12));
  ASSERT_TRUE(grpc_result.status.ok());
  testing::ProcessResult cli = testing::RunProcess(
      {MOE_CLI_BIN, "generate", "--gateway", cluster_->address("gateway"),
       "--prompt", prompt, "--max-tokens", "12", "--ignore-eos", "--json"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  const nlohmann::json line = nlohmann::json::parse(cli.out, nullptr, false);
  ASSERT_FALSE(line.is_discarded()) << cli.out;
  EXPECT_EQ(line["output_ids"].get<std::vector<int32_t>>(), grpc_result.tokens);
  EXPECT_EQ(line["text"].get<std::string>(), grpc_result.text);

  // Plain mode prints the text as it arrives, then the summary.
  cli = testing::RunProcess({MOE_CLI_BIN, "generate", "--gateway",
                             cluster_->address("gateway"), "--prompt", prompt,
                             "--max-tokens", "12", "--ignore-eos"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(cli.out.substr(0, grpc_result.text.size() + 1),
            grpc_result.text + "\n");
}

TEST_F(TextE2eTest, ModelInfoSaysTheModelTakesText) {
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(cluster_->gateway()
                  .GetModelInfo(&context, v1::GetModelInfoRequest(), &info)
                  .ok());
  EXPECT_TRUE(info.has_tokenizer());
  EXPECT_TRUE(info.has_chat_template());
  EXPECT_EQ(info.model_name(), "model");
}

TEST_F(TextE2eTest, BadTextRequestsNameTheField) {
  struct Case {
    std::string name;
    v1::GenerateRequest request;
    std::string message;
  };
  std::vector<Case> cases;
  {
    v1::GenerateRequest r = TextRequest("hi", 4);
    r.add_prompt_ids(5);
    cases.push_back({"prompt and ids", r, "exactly one may be set"});
  }
  {
    v1::GenerateRequest r = TextRequest("", 4);
    v1::ChatMessage* m = r.add_messages();
    m->set_role("robot");
    m->set_content("x");
    cases.push_back({"bad role", r, "messages[0].role"});
  }
  {
    v1::GenerateRequest r = TextRequest(std::string(20000, 'a') + " b", 4);
    cases.push_back({"over the context", r, "prompt"});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const StreamResult result = RunGenerate(cluster_->gateway(), c.request);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << result.status.error_message();
    EXPECT_THAT(result.status.error_message(), HasSubstr(c.message));
  }
  // proto3 strings are UTF-8: a prompt that is not cannot cross gRPC (the
  // client or the server's parser refuses it; tokenizer_test and the HTTP
  // API's tests check the tokenizer's own refusal naming the byte). The
  // call fails and the gateway goes on serving.
  const StreamResult not_utf8 =
      RunGenerate(cluster_->gateway(), TextRequest("bad \xff byte", 4));
  EXPECT_FALSE(not_utf8.status.ok());
  const StreamResult next = RunGenerate(cluster_->gateway(), TextRequest("ok", 4));
  EXPECT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.tokens.size(), 4u);
}

}  // namespace
}  // namespace moe
