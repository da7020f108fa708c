// moe-cli: flag spelling and checks as units, then the real binary against
// an in-process fake of the gateway's Inference service.
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "core/rpc/server_util.h"
#include "gmock/gmock.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "moe/v1/generate.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/process_util.h"
#include "tools/common/command_line.h"
#include "tools/moe_cli/cli_options.h"

// Flags of this test binary, for ApplyFlags.
ABSL_FLAG(int, test_count, 1, "");
ABSL_FLAG(bool, test_switch, false, "");
ABSL_FLAG(std::string, test_name, "", "");

namespace moe {
namespace {

using ::moe::testing::RunProcess;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(RewriteFlagNamesTest, RewritesOnlyFlagNames) {
  auto takes_value = [](absl::string_view name) {
    return name == "request_id" || name == "prompt_ids";
  };
  EXPECT_THAT(
      tools::RewriteFlagNames(
          {"moe-cli", "generate", "--prompt-ids", "1,2", "--max-tokens=4-5",
           "-top-k=3", "--ignore-eos", "--request-id", "--x-y", "pos-it", "--",
           "--after-dash"},
          takes_value),
      ElementsAre("moe-cli", "generate", "--prompt_ids", "1,2",
                  "--max_tokens=4-5", "-top_k=3", "--ignore_eos",
                  "--request_id", "--x-y", "pos-it", "--", "--after-dash"));
  // argv[0] is never touched; underscores stay.
  EXPECT_THAT(tools::RewriteFlagNames({"a-b", "--a_b=c-d", "-"}, takes_value),
              ElementsAre("a-b", "--a_b=c-d", "-"));
}

TEST(RewriteFlagNamesTest, AsksTheFlagRegistryForValues) {
  // --test-name takes the next argument, even one that looks like a flag;
  // --test-switch is boolean and does not.
  EXPECT_THAT(tools::RewriteFlagNames({"p", "--test-name", "--x-y",
                                       "--test-switch", "--test-count", "3"}),
              ElementsAre("p", "--test_name", "--x-y", "--test_switch",
                          "--test_count", "3"));
}

TEST(ApplyFlagsTest, SetsFlagsAndReturnsPositionals) {
  absl::StatusOr<std::vector<std::string>> rest =
      tools::ApplyFlags({"p", "one", "--test_count=7", "--test_switch",
                         "--test_name", "n", "two", "--", "--test_count=9"});
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_THAT(*rest, ElementsAre("one", "two", "--test_count=9"));
  EXPECT_EQ(absl::GetFlag(FLAGS_test_count), 7);
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_switch));
  EXPECT_EQ(absl::GetFlag(FLAGS_test_name), "n");
  ASSERT_TRUE(tools::ApplyFlags({"p", "--notest_switch"}).ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_test_switch));
  // Usage flags are left to absl::ParseCommandLine.
  rest = tools::ApplyFlags({"p", "--helpfull", "x"});
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_THAT(*rest, ElementsAre("x"));
}

TEST(ApplyFlagsTest, ErrorsNameTheFlag) {
  auto error = [](std::vector<std::string> args) {
    absl::StatusOr<std::vector<std::string>> rest = tools::ApplyFlags(args);
    EXPECT_FALSE(rest.ok());
    return rest.ok() ? std::string() : std::string(rest.status().message());
  };
  EXPECT_THAT(error({"p", "--test_cuont=3"}),
              HasSubstr("unknown flag --test_cuont"));
  EXPECT_THAT(error({"p", "--test_count"}),
              HasSubstr("--test_count: missing value"));
  EXPECT_THAT(error({"p", "--test_count=x"}), HasSubstr("--test_count: "));
  EXPECT_THAT(error({"p", "--test_switch=maybe"}),
              HasSubstr("--test_switch: "));
  EXPECT_THAT(error({"p", "--notest_count"}),
              HasSubstr("unknown flag --notest_count"));
}

TEST(CliOptionsTest, ParsesTokenIds) {
  absl::StatusOr<std::vector<int32_t>> ids =
      cli::ParseTokenIds("x", " 1, 2 ,3");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(1, 2, 3));
  EXPECT_TRUE(cli::ParseTokenIds("x", "")->empty());
  EXPECT_EQ(cli::ParseTokenIds("prompt-ids", "1,b").status().message(),
            "--prompt-ids: \"b\" is not an integer token id");
  EXPECT_FALSE(cli::ParseTokenIds("x", "1,,2").ok());
  EXPECT_FALSE(cli::ParseTokenIds("x", "99999999999").ok());
}

TEST(CliOptionsTest, SetsOptionalSamplingFieldsOnlyWhenGiven) {
  cli::GenerateFlags flags;
  flags.gateway = "127.0.0.1:1";
  flags.prompt_ids = "5,6";
  flags.stop_ids = "9";
  flags.max_tokens = 3;
  absl::StatusOr<v1::GenerateRequest> request =
      cli::BuildGenerateRequest(flags);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(request->prompt_ids(), ElementsAre(5, 6));
  EXPECT_THAT(request->stop_token_ids(), ElementsAre(9));
  EXPECT_EQ(request->max_tokens(), 3);
  EXPECT_FALSE(request->sampling().has_top_p());
  EXPECT_FALSE(request->sampling().has_repetition_penalty());
  EXPECT_FALSE(request->sampling().has_seed());
  flags.top_p = 0.9;
  flags.repetition_penalty = 1.1;
  flags.seed = 0;
  request = cli::BuildGenerateRequest(flags);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FLOAT_EQ(request->sampling().top_p(), 0.9f);
  EXPECT_FLOAT_EQ(request->sampling().repetition_penalty(), 1.1f);
  ASSERT_TRUE(request->sampling().has_seed());
  EXPECT_EQ(request->sampling().seed(), 0u);
}

TEST(CliOptionsTest, RequiredFlagsAreNamed) {
  cli::GenerateFlags flags;
  flags.prompt_ids = "1";
  EXPECT_THAT(std::string(cli::BuildGenerateRequest(flags).status().message()),
              HasSubstr("--gateway is required"));
  flags.gateway = "x:1";
  flags.prompt_ids = "";
  EXPECT_THAT(std::string(cli::BuildGenerateRequest(flags).status().message()),
              HasSubstr("--prompt (text) or --prompt-ids"));
  flags.prompt = "text";
  flags.prompt_ids = "1";
  EXPECT_THAT(std::string(cli::BuildGenerateRequest(flags).status().message()),
              HasSubstr("give one of them, not both"));
  flags.prompt = "";
  flags.stop_ids = "a";
  EXPECT_THAT(std::string(cli::BuildGenerateRequest(flags).status().message()),
              HasSubstr("--stop-ids: \"a\""));
}

// The gateway's public service, scripted: tokens 100, 101, ... one per
// response; prompt id 999 fails with INVALID_ARGUMENT; request id "hang"
// streams one token and then waits until the client cancels. A text prompt
// (prompt or messages) gets text too: "w0 ", "w1 ", ... one per token.
class FakeInference final : public v1::Inference::Service {
 public:
  grpc::Status Generate(
      grpc::ServerContext* context, const v1::GenerateRequest* request,
      grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    {
      absl::MutexLock lock(&mu_);
      last_ = *request;
    }
    if (request->prompt_ids_size() > 0 && request->prompt_ids(0) == 999) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "prompt_ids[0]: 999 is outside the vocabulary");
    }
    v1::GenerateResponse response;
    response.set_request_id("req-1");
    if (request->request_id() == "hang") {
      response.add_token_ids(100);
      writer->Write(response);
      while (!context->IsCancelled()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      cancelled_.store(true);
      return grpc::Status::CANCELLED;
    }
    const bool text = !request->prompt().empty() || request->messages_size() > 0;
    for (int i = 0; i < request->max_tokens(); ++i) {
      response.clear_token_ids();
      response.add_token_ids(100 + i);
      if (text) response.set_text(absl::StrCat("w", i, " "));
      if (request->logprobs() > 0) {
        response.clear_logprobs();
        v1::TokenLogprobs* lp = response.add_logprobs();
        lp->set_token_id(100 + i);
        lp->set_logprob(-0.5f);
        v1::TopLogprob* top = lp->add_top();
        top->set_token_id(100 + i);
        top->set_logprob(-0.5f);
      }
      if (i + 1 == request->max_tokens()) {
        response.set_finish_reason(v1::FINISH_REASON_LENGTH);
        response.mutable_usage()->set_prompt_tokens(request->prompt_ids_size());
        response.mutable_usage()->set_completion_tokens(request->max_tokens());
      }
      writer->Write(response);
    }
    return grpc::Status::OK;
  }
  grpc::Status Abort(grpc::ServerContext*, const v1::AbortRequest* request,
                     v1::AbortResponse* response) override {
    response->set_found(request->request_id() == "running");
    return grpc::Status::OK;
  }
  grpc::Status GetModelInfo(grpc::ServerContext*,
                            const v1::GetModelInfoRequest*,
                            v1::ModelInfo* info) override {
    info->set_architecture("MixtralForCausalLM");
    info->set_vocab_size(512);
    info->add_eos_token_ids(2);
    return grpc::Status::OK;
  }

  v1::GenerateRequest last() {
    absl::MutexLock lock(&mu_);
    return last_;
  }
  bool cancelled() const { return cancelled_.load(); }

 private:
  absl::Mutex mu_;
  v1::GenerateRequest last_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> cancelled_{false};
};

class MoeCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<StartedServer> started =
        StartGrpcServer("fake gateway", "127.0.0.1:0", {&service_});
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(started->server);
    gateway_ = absl::StrCat("127.0.0.1:", started->port);
  }
  void TearDown() override { server_->Shutdown(); }

  testing::ProcessResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), MOE_CLI_BIN);
    return RunProcess(args);
  }

  FakeInference service_;
  std::unique_ptr<grpc::Server> server_;
  std::string gateway_;
};

TEST_F(MoeCliTest, BadFlagsExitWith2NamingTheFlag) {
  const struct {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{}, "missing command"},
      {{"chatter", "--gateway", gateway_}, "unknown command \"chatter\""},
      {{"chat", "--gateway", gateway_, "--prompt", "hi"},
       "chat: --prompt and --prompt-ids are for generate"},
      {{"generate", "--gateway", gateway_, "--prompt", "hi", "--prompt-ids",
        "1"},
       "give one of them, not both"},
      {{"generate", "--prompt-ids", "1,2"}, "--gateway is required"},
      {{"generate", "--gateway", gateway_, "--prompt-ids", "1,x"},
       "--prompt-ids: \"x\" is not an integer token id"},
      {{"generate", "--gateway", gateway_},
       "--prompt (text) or --prompt-ids (comma-separated token ids"},
      {{"generate", "--gateway", gateway_, "--prompt-ids", "1", "--max-tokens",
        "many"},
       "--max_tokens: "},
      {{"generate", "--gateway", gateway_, "--prompt-ids", "1",
        "--stop-ids=4,y"},
       "--stop-ids: \"y\""},
      {{"generate", "--gateway", gateway_, "--prompt-ids", "1", "--bogus"},
       "unknown flag --bogus"},
      {{"generate", "--gateway", gateway_, "--prompt-ids"},
       "--prompt_ids: missing value"},
      {{"generate", "--gateway", gateway_, "--prompt", "bad \xff byte"},
       "--prompt: invalid UTF-8 at byte 4"},
      {{"chat", "--gateway", gateway_, "--message", "\xc3("},
       "--message: invalid UTF-8 at byte 0"},
      {{"chat", "--gateway", gateway_, "--system", "ok", "--message", "\xe2\x82"},
       "--message: invalid UTF-8 at byte 0"},
      {{"info"}, "--gateway is required"},
      {{"abort", "--gateway", gateway_}, "--request-id is required"},
  };
  for (const auto& c : cases) {
    testing::ProcessResult result = Cli(c.args);
    EXPECT_EQ(result.exit_code, 2) << absl::StrJoin(c.args, " ");
    EXPECT_THAT(result.err, HasSubstr(c.message)) << absl::StrJoin(c.args, " ");
  }
}

TEST_F(MoeCliTest, GenerateStreamsTextWithASummary) {
  testing::ProcessResult result =
      Cli({"generate", "--gateway", gateway_, "--prompt-ids", "1,2,3",
           "--max-tokens", "3"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, ::testing::StartsWith("output: 100,101,102\n"));
  EXPECT_THAT(result.out, HasSubstr("finish: length | request req-1 | tokens: "
                                    "prompt 3, completion 3, cached 0"));
  EXPECT_THAT(result.out, HasSubstr("client: time to first token "));
}

TEST_F(MoeCliTest, TextPromptPrintsTheTextAsItArrives) {
  testing::ProcessResult result =
      Cli({"generate", "--gateway", gateway_, "--prompt", "Once upon a time",
           "--max-tokens", "3"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, ::testing::StartsWith("w0 w1 w2 \nfinish: length"));
  const v1::GenerateRequest sent = service_.last();
  EXPECT_EQ(sent.prompt(), "Once upon a time");
  EXPECT_EQ(sent.prompt_ids_size(), 0);

  result = Cli({"generate", "--gateway", gateway_, "--prompt", "x",
                "--max-tokens", "2", "--json"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json line = nlohmann::json::parse(result.out, nullptr, false);
  ASSERT_FALSE(line.is_discarded()) << result.out;
  EXPECT_EQ(line["text"], "w0 w1 ");
  EXPECT_EQ(line["output_ids"], nlohmann::json({100, 101}));
}

TEST_F(MoeCliTest, ChatSendsTheConversation) {
  testing::ProcessResult result =
      Cli({"chat", "--gateway", gateway_, "--system", "Be brief.", "--message",
           "Hi there", "--max-tokens", "2"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_THAT(result.out, ::testing::StartsWith("w0 w1 \nfinish: length"));
  v1::GenerateRequest sent = service_.last();
  ASSERT_EQ(sent.messages_size(), 2);
  EXPECT_EQ(sent.messages(0).role(), "system");
  EXPECT_EQ(sent.messages(0).content(), "Be brief.");
  EXPECT_EQ(sent.messages(1).role(), "user");
  EXPECT_EQ(sent.messages(1).content(), "Hi there");
  EXPECT_EQ(sent.prompt_ids_size(), 0);

  // Turns from standard input: each reply joins the conversation.
  result = RunProcess(
      {"/bin/bash", "-c",
       absl::StrCat("printf 'first\\n\\nsecond\\n' | ", MOE_CLI_BIN,
                    " chat --gateway ", gateway_, " --max-tokens 2")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  sent = service_.last();
  ASSERT_EQ(sent.messages_size(), 3);
  EXPECT_EQ(sent.messages(0).content(), "first");
  EXPECT_EQ(sent.messages(1).role(), "assistant");
  EXPECT_EQ(sent.messages(1).content(), "w0 w1 ");
  EXPECT_EQ(sent.messages(2).content(), "second");
}

TEST_F(MoeCliTest, GenerateJsonMatchesMoeGenerateKeys) {
  testing::ProcessResult result =
      Cli({"generate", "--gateway=" + gateway_, "--prompt_ids=4,5",
           "--max_tokens=2", "--json", "--logprobs", "1"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json line = nlohmann::json::parse(result.out, nullptr, false);
  ASSERT_FALSE(line.is_discarded()) << result.out;
  EXPECT_EQ(line["prompt_ids"], nlohmann::json({4, 5}));
  EXPECT_EQ(line["output_ids"], nlohmann::json({100, 101}));
  EXPECT_EQ(line["finish_reason"], "length");
  EXPECT_EQ(line["usage"]["completion_tokens"], 2);
  ASSERT_EQ(line["logprobs"].size(), 2u);
  EXPECT_EQ(line["logprobs"][1]["token_id"], 101);
  EXPECT_EQ(result.out.back(), '\n');
  EXPECT_EQ(result.out.find('\n'), result.out.size() - 1);  // one line
}

TEST_F(MoeCliTest, GenerateSendsEveryFieldBothSpellings) {
  testing::ProcessResult result = Cli({"generate",
                                       "--gateway",
                                       gateway_,
                                       "--prompt-ids",
                                       "7",
                                       "--max-tokens=1",
                                       "--temperature",
                                       "0.7",
                                       "--top-k",
                                       "5",
                                       "--top-p",
                                       "0.9",
                                       "--repetition_penalty",
                                       "1.2",
                                       "--seed",
                                       "42",
                                       "--stop-ids",
                                       "3,4",
                                       "--ignore-eos",
                                       "--request-id",
                                       "mine"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  const v1::GenerateRequest r = service_.last();
  EXPECT_EQ(r.request_id(), "mine");
  EXPECT_THAT(r.prompt_ids(), ElementsAre(7));
  EXPECT_EQ(r.max_tokens(), 1);
  EXPECT_FLOAT_EQ(r.sampling().temperature(), 0.7f);
  EXPECT_EQ(r.sampling().top_k(), 5);
  EXPECT_FLOAT_EQ(r.sampling().top_p(), 0.9f);
  EXPECT_FLOAT_EQ(r.sampling().repetition_penalty(), 1.2f);
  EXPECT_EQ(r.sampling().seed(), 42u);
  EXPECT_THAT(r.stop_token_ids(), ElementsAre(3, 4));
  EXPECT_TRUE(r.ignore_eos());

  result = Cli({"generate", "--gateway", gateway_, "--prompt-ids", "7"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_FALSE(service_.last().sampling().has_top_p());
  EXPECT_FALSE(service_.last().sampling().has_seed());
  EXPECT_FALSE(service_.last().sampling().has_repetition_penalty());
}

TEST_F(MoeCliTest, RpcErrorsPrintTheCodeName) {
  testing::ProcessResult result =
      Cli({"generate", "--gateway", gateway_, "--prompt-ids", "999"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err,
            "moe-cli: INVALID_ARGUMENT: prompt_ids[0]: 999 is outside the "
            "vocabulary\n");
}

TEST_F(MoeCliTest, InfoAndAbort) {
  testing::ProcessResult info = Cli({"info", "--gateway", gateway_});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, HasSubstr("architecture: MixtralForCausalLM\n"));
  EXPECT_THAT(info.out, HasSubstr("vocab_size: 512\n"));
  EXPECT_THAT(info.out, HasSubstr("eos_token_ids: 2\n"));
  testing::ProcessResult found =
      Cli({"abort", "--gateway", gateway_, "--request-id", "running"});
  EXPECT_EQ(found.exit_code, 0);
  EXPECT_EQ(found.out, "request running: aborted\n");
  testing::ProcessResult missing =
      Cli({"abort", "--gateway", gateway_, "--request-id", "other"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.out, "request other: not running\n");
}

TEST_F(MoeCliTest, InterruptCancelsTheCall) {
  std::unique_ptr<testing::ChildProcess> cli = testing::ChildProcess::Start(
      {MOE_CLI_BIN, "generate", "--gateway", gateway_, "--prompt-ids", "1",
       "--request-id", "hang"});
  ASSERT_NE(cli, nullptr);
  // The first token is printed before the call ends.
  ASSERT_TRUE(cli->ReadUntilContains("output: 100", 60)) << cli->StderrText();
  cli->Signal(SIGINT);
  std::optional<int> status = cli->Wait(60);
  ASSERT_TRUE(status.has_value());
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 130);
  for (int i = 0; i < 6000 && !service_.cancelled(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(service_.cancelled());
}

TEST_F(MoeCliTest, AnUnreachableGatewayIsUnavailable) {
  testing::ProcessResult result =
      Cli({"info", "--gateway", "127.0.0.1:1", "--timeout", "60"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, ::testing::StartsWith("moe-cli: UNAVAILABLE: "));
}

}  // namespace
}  // namespace moe
