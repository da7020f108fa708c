// End-to-end security: a cluster of real processes on 127.0.0.1 started by
// the real launcher from a topology with a "security" section (mutual TLS
// between the servers, TLS and a bearer token on the gateway), with TLS
// material generated for the run (tests/security/make_test_certs.sh).
//   * A TLS client with the token (a test channel, and the real moe-cli)
//     streams the same tokens as a plaintext cluster.
//   * The public API refuses a call without or with a wrong token with
//     UNAUTHENTICATED, never echoing the token, and serves the next valid
//     call; grpc.health.v1 stays open.
//   * Each internal server refuses TLS callers without a client certificate
//     (UNAUTHENTICATED), callers with a certificate from another CA (the
//     handshake fails: UNAVAILABLE, no response) and plaintext callers
//     (UNAVAILABLE); it serves callers with a trusted certificate.
//   * Bad TLS or token flags end a server, a client or the launcher at
//     start with a non-zero exit and a message naming the flag and file.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/security/bearer_token.h"
#include "core/security/client_certificate_auth.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "moe/v1/expert.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/generate_client.h"
#include "tests/launched_cluster.h"
#include "tests/process_util.h"
#include "tests/security_test_util.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::moe::testing::LaunchedCluster;
using ::moe::testing::ProcessResult;
using ::moe::testing::RunProcess;
using ::moe::testing::StreamResult;
using ::moe::testing::TestCertificates;
using ::moe::testing::TestChannel;

constexpr char kFixture[] = "tiny-mixtral";
const std::vector<int32_t> kPrompt = {1, 15, 27, 30, 42, 7};
constexpr int kMaxTokens = 12;

std::chrono::system_clock::time_point In(int seconds) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

class SecurityE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new TestCertificates();
    if (!certs_->ok()) return;
    const std::string topology = certs_->path("tls-cluster.json");
    nlohmann::json json = {
        {"name", "tls"},
        {"expert_servers", {{{"name", "expert-0"}, {"experts", "all"}}}},
        {"attention_servers", 1},
        // Relative to the topology's folder, as the launcher resolves them.
        {"security",
         {{"tls_cert_file", "server.pem"},
          {"tls_key_file", "server.key"},
          {"tls_ca_file", "ca.pem"},
          {"auth_token_file", "token"}}}};
    testing::WriteFileOrDie(topology, json.dump(2));
    cluster_ = LaunchedCluster::Start(topology, testing::FixtureDir(kFixture))
                   .release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete certs_;
    certs_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(certs_->ok());
    ASSERT_NE(cluster_, nullptr);
  }

  // The gateway as a public client sees it: TLS verifying the server.
  std::unique_ptr<v1::Inference::Stub> Gateway(const std::string& token) {
    return v1::Inference::NewStub(TestChannel(cluster_->address("gateway"),
                                              certs_->Client(""), token));
  }

  static TestCertificates* certs_;
  static LaunchedCluster* cluster_;
};

TestCertificates* SecurityE2eTest::certs_ = nullptr;
LaunchedCluster* SecurityE2eTest::cluster_ = nullptr;

TEST_F(SecurityE2eTest, TlsClientWithTokenStreamsThePlaintextClustersTokens) {
  const v1::GenerateRequest request =
      testing::GreedyRequest(kPrompt, kMaxTokens);
  const StreamResult tls = testing::RunGenerate(*Gateway(certs_->token()), request);
  ASSERT_TRUE(tls.status.ok()) << tls.status.error_message();
  ASSERT_EQ(tls.tokens.size(), static_cast<size_t>(kMaxTokens));

  std::vector<int32_t> plaintext_tokens;
  {
    std::unique_ptr<LaunchedCluster> plaintext = LaunchedCluster::Start(
        "deploy/local/one-expert-server.json", testing::FixtureDir(kFixture));
    ASSERT_NE(plaintext, nullptr);
    const StreamResult plain = testing::RunGenerate(plaintext->gateway(), request);
    ASSERT_TRUE(plain.status.ok()) << plain.status.error_message();
    plaintext_tokens = plain.tokens;
  }
  EXPECT_EQ(tls.tokens, plaintext_tokens);

  // The real client: moe-cli with the CA and the token file.
  const std::string prompt = "1,15,27,30,42,7";
  const ProcessResult cli = RunProcess(
      {MOE_CLI_BIN, "generate", "--gateway", cluster_->address("gateway"),
       "--prompt-ids", prompt, "--max-tokens", std::to_string(kMaxTokens),
       "--ignore-eos", "--json", "--tls-ca-file", certs_->path("ca.pem"),
       "--auth-token-file", certs_->path("token")},
      {}, 60);
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(nlohmann::json::parse(cli.out)["output_ids"].get<std::vector<int32_t>>(),
            plaintext_tokens);
}

TEST_F(SecurityE2eTest, PublicApiRefusesMissingOrWrongTokenAndServesTheNext) {
  const std::string token = certs_->token();
  for (const std::string& sent : {std::string(), std::string("wrong-token"),
                                  token + "x"}) {
    SCOPED_TRACE(sent.empty() ? "no token" : "token " + sent);
    auto gateway = Gateway(sent);
    const StreamResult generate = testing::RunGenerate(
        *gateway, testing::GreedyRequest(kPrompt, kMaxTokens), 30);
    EXPECT_EQ(generate.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(generate.status.error_message(), security::kInvalidBearerToken);
    EXPECT_TRUE(generate.tokens.empty());

    grpc::ClientContext info_context;
    info_context.set_deadline(In(30));
    v1::ModelInfo info;
    const grpc::Status info_status = gateway->GetModelInfo(
        &info_context, v1::GetModelInfoRequest(), &info);
    EXPECT_EQ(info_status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(info.vocab_size(), 0);

    grpc::ClientContext abort_context;
    abort_context.set_deadline(In(30));
    v1::AbortRequest abort;
    abort.set_request_id("anything");
    v1::AbortResponse aborted;
    const grpc::Status abort_status =
        gateway->Abort(&abort_context, abort, &aborted);
    EXPECT_EQ(abort_status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    for (const grpc::Status& s : {generate.status, info_status, abort_status}) {
      EXPECT_FALSE(absl::StrContains(s.error_message(), token));
    }
  }
  // Health stays open for probes that carry no token.
  {
    auto health = grpc::health::v1::Health::NewStub(
        TestChannel(cluster_->address("gateway"), certs_->Client("")));
    grpc::ClientContext context;
    context.set_deadline(In(30));
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, {}, &response).ok());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  // The gateway still serves a valid request.
  auto gateway = Gateway(token);
  grpc::ClientContext context;
  context.set_deadline(In(30));
  v1::ModelInfo info;
  ASSERT_TRUE(gateway->GetModelInfo(&context, {}, &info).ok());
  EXPECT_GT(info.vocab_size(), 0);
  const StreamResult ok = testing::RunGenerate(
      *gateway, testing::GreedyRequest(kPrompt, kMaxTokens));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.tokens.size(), static_cast<size_t>(kMaxTokens));

  // moe-cli without the token reports the refusal and exits 1.
  const ProcessResult cli = RunProcess(
      {MOE_CLI_BIN, "info", "--gateway", cluster_->address("gateway"),
       "--tls-ca-file", certs_->path("ca.pem")},
      {}, 60);
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(cli.err, "UNAUTHENTICATED")) << cli.err;
  EXPECT_TRUE(absl::StrContains(cli.err, security::kInvalidBearerToken)) << cli.err;
}

// The OpenAI HTTP API of the same gateway: HTTPS with the gateway's
// certificate, the same bearer token (401 in OpenAI's error shape without
// it or with a wrong one), /health open; plaintext HTTP is not served.
TEST_F(SecurityE2eTest, HttpApiServesHttpsWithTheSameToken) {
  const std::string url = cluster_->openai_url();
  ASSERT_TRUE(absl::StartsWith(url, "https://127.0.0.1:")) << url;
  const std::string body =
      R"({"prompt": [1, 15, 27, 30, 42, 7], "max_tokens": 12, "temperature": 0,)"
      R"( "ignore_eos": true, "return_token_ids": true})";
  auto post = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {
        "curl", "-sS", "--cacert", certs_->path("ca.pem"), "-w",
        "\n%{http_code}", "-H", "Content-Type: application/json", "-d", body};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(url + "/completions");
    return RunProcess(argv, {}, 60);
  };
  const ProcessResult ok =
      post({"-H", "Authorization: Bearer " + certs_->token()});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  const size_t split = ok.out.rfind('\n');
  ASSERT_EQ(ok.out.substr(split + 1), "200") << ok.out;
  const nlohmann::json response =
      nlohmann::json::parse(ok.out.substr(0, split), nullptr, false);
  ASSERT_FALSE(response.is_discarded()) << ok.out;
  const StreamResult grpc = testing::RunGenerate(
      *Gateway(certs_->token()), [] {
        v1::GenerateRequest r = testing::GreedyRequest(kPrompt, kMaxTokens);
        r.set_ignore_eos(true);
        return r;
      }());
  ASSERT_TRUE(grpc.status.ok()) << grpc.status.error_message();
  EXPECT_EQ(response["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
            grpc.tokens);

  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{},
        std::vector<std::string>{"-H", "Authorization: Bearer wrong-token"}}) {
    const ProcessResult refused = post(extra);
    ASSERT_EQ(refused.exit_code, 0) << refused.err;
    const size_t at = refused.out.rfind('\n');
    EXPECT_EQ(refused.out.substr(at + 1), "401") << refused.out;
    const nlohmann::json error =
        nlohmann::json::parse(refused.out.substr(0, at), nullptr, false);
    ASSERT_FALSE(error.is_discarded()) << refused.out;
    EXPECT_TRUE(error["error"]["message"].is_string()) << refused.out;
    EXPECT_EQ(refused.out.find(certs_->token()), std::string::npos)
        << "the token was echoed";
  }

  std::string base = url.substr(0, url.size() - 3);  // without "/v1"
  const ProcessResult health =
      RunProcess({"curl", "-sS", "--cacert", certs_->path("ca.pem"), "-o",
                  "/dev/null", "-w", "%{http_code}", base + "/health"},
                 {}, 60);
  EXPECT_EQ(health.out, "200") << health.err;
  base.replace(0, 5, "http");  // https:// -> http://
  const ProcessResult plaintext = RunProcess(
      {"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", base + "/health"},
      {}, 60);
  EXPECT_NE(plaintext.out, "200") << "plaintext HTTP was served";
}

TEST_F(SecurityE2eTest, LoadgenSendsTheTokenOverTls) {
  const std::string json_path = certs_->path("loadgen.json");
  auto loadgen = [&](const std::vector<std::string>& more) {
    std::vector<std::string> argv = {
        MOE_LOADGEN_BIN, "--gateway", cluster_->address("gateway"),
        "--progress=false", "--num-requests", "4", "--arrival", "concurrency",
        "--max-concurrency", "2", "--input-len", "8", "--output-len", "4",
        "--json", json_path, "--tls-ca-file", certs_->path("ca.pem")};
    argv.insert(argv.end(), more.begin(), more.end());
    return RunProcess(argv, {}, 120);
  };
  const ProcessResult with_token =
      loadgen({"--auth-token-file", certs_->path("token")});
  ASSERT_EQ(with_token.exit_code, 0) << with_token.err;
  const nlohmann::json result = nlohmann::json::parse(
      testing::ReadFileOrDie(json_path), nullptr, false);
  ASSERT_TRUE(result.is_object()) << testing::ReadFileOrDie(json_path);
  const nlohmann::json& run = result["runs"][0];
  EXPECT_EQ(run["completed"], 4) << run.dump();
  EXPECT_EQ(run["failed"], 0) << run.dump();

  // Without the token moe-loadgen cannot even read the model's limits.
  const ProcessResult without = loadgen({});
  EXPECT_NE(without.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(without.err, security::kInvalidBearerToken))
      << without.err;
}

// One call of a server's own service (router GetStats, expert GetPlacement,
// attention GetLoad) and of grpc.health.v1 on `channel`; `responded` tells
// whether either produced a response message with content.
struct Outcome {
  grpc::Status service;
  grpc::Status health;
  bool responded = false;
};

Outcome CallInternal(const std::string& name,
                     const std::shared_ptr<grpc::Channel>& channel) {
  Outcome outcome;
  {
    grpc::ClientContext context;
    context.set_deadline(In(20));
    if (name == "router") {
      v1::RouterStats stats;
      outcome.service = v1::RouterService::NewStub(channel)->GetStats(
          &context, v1::GetRouterStatsRequest(), &stats);
      outcome.responded |= stats.ByteSizeLong() > 0;
    } else if (absl::StartsWith(name, "expert")) {
      v1::Placement placement;
      outcome.service = v1::ExpertService::NewStub(channel)->GetPlacement(
          &context, v1::GetPlacementRequest(), &placement);
      outcome.responded |= placement.ByteSizeLong() > 0;
    } else {
      v1::AttentionLoad load;
      outcome.service = v1::AttentionService::NewStub(channel)->GetLoad(
          &context, v1::GetLoadRequest(), &load);
      outcome.responded |= load.ByteSizeLong() > 0;
    }
  }
  grpc::ClientContext context;
  context.set_deadline(In(20));
  grpc::health::v1::HealthCheckResponse response;
  outcome.health = grpc::health::v1::Health::NewStub(channel)->Check(
      &context, grpc::health::v1::HealthCheckRequest(), &response);
  outcome.responded |= response.ByteSizeLong() > 0;
  return outcome;
}

TEST_F(SecurityE2eTest, InternalServersRequireATrustedClientCertificate) {
  for (const std::string name : {"router", "expert-0", "attention-0"}) {
    SCOPED_TRACE(name);
    const std::string address = cluster_->address(name);
    ASSERT_FALSE(address.empty());

    // A trusted client certificate: served.
    const Outcome trusted =
        CallInternal(name, TestChannel(address, certs_->Client("client")));
    EXPECT_TRUE(trusted.service.ok()) << trusted.service.error_message();
    EXPECT_TRUE(trusted.health.ok()) << trusted.health.error_message();
    EXPECT_TRUE(trusted.responded);

    // TLS without a certificate: the handshake succeeds, every call is
    // refused by the server's RequireClientCertificate.
    const Outcome anonymous =
        CallInternal(name, TestChannel(address, certs_->Client("")));
    for (const grpc::Status& s : {anonymous.service, anonymous.health}) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << s.error_message();
      EXPECT_EQ(s.error_message(), security::kClientCertificateRequired);
    }
    EXPECT_FALSE(anonymous.responded);

    // A certificate from a CA the server does not trust: the server ends
    // the TLS handshake, so the client sees UNAVAILABLE and no call runs.
    const Outcome untrusted = CallInternal(
        name, TestChannel(address, certs_->Client("untrusted-client")));
    for (const grpc::Status& s : {untrusted.service, untrusted.health}) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
          << s.error_message();
    }
    EXPECT_FALSE(untrusted.responded);

    // Plaintext to a TLS port: the server closes the connection.
    const Outcome plaintext =
        CallInternal(name, TestChannel(address, security::TlsConfig()));
    for (const grpc::Status& s : {plaintext.service, plaintext.health}) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
          << s.error_message();
    }
    EXPECT_FALSE(plaintext.responded);
  }
}

TEST_F(SecurityE2eTest, GatewayRefusesPlaintextAndClientsRefuseAnUnknownServer) {
  const std::string address = cluster_->address("gateway");
  const std::string token = certs_->token();
  for (const security::TlsConfig& tls :
       {security::TlsConfig(), certs_->Trusting("other-ca")}) {
    SCOPED_TRACE(tls.enabled() ? "trusting another CA" : "plaintext");
    auto gateway = v1::Inference::NewStub(TestChannel(address, tls, token));
    grpc::ClientContext context;
    context.set_deadline(In(20));
    v1::ModelInfo info;
    const grpc::Status status = gateway->GetModelInfo(&context, {}, &info);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << status.error_message();
    EXPECT_EQ(info.ByteSizeLong(), 0u);
  }
}

// Runs `argv` and expects a start-up failure: exit code `code`, and stderr
// holding each of `needles`.
void ExpectStartupError(const std::vector<std::string>& argv, int code,
                        const std::vector<std::string>& needles) {
  SCOPED_TRACE(absl::StrCat(argv[0], " ... ", argv.back()));
  const ProcessResult result = RunProcess(argv, {}, 60);
  EXPECT_EQ(result.exit_code, code) << result.out << result.err;
  for (const std::string& needle : needles) {
    EXPECT_TRUE(absl::StrContains(result.err, needle))
        << "no \"" << needle << "\" in:\n" << result.err;
  }
}

// No cluster needed: every program stops before it serves or connects.
TEST(SecurityFlagsE2eTest, BadTlsAndTokenFlagsEndTheProgramWithAClearError) {
  const TestCertificates certificates;
  ASSERT_TRUE(certificates.ok());
  const TestCertificates* certs_ = &certificates;
  const std::string bin = MOE_BIN_DIR;
  const std::string model = testing::FixtureDir(kFixture);
  const std::string garbage = certs_->path("garbage.pem");
  testing::WriteFileOrDie(garbage, "this is not PEM\n");
  const std::string empty = certs_->path("empty");
  testing::WriteFileOrDie(empty, "");
  const std::string missing = certs_->path("missing.pem");
  const std::string cert = "--tls_cert_file=" + certs_->path("server.pem");
  const std::string key = "--tls_key_file=" + certs_->path("server.key");
  const std::vector<std::string> router = {
      bin + "/router", "--model", model, "--expert_servers", "127.0.0.1:1",
      "--connect_timeout", "1"};
  auto with = [](std::vector<std::string> argv,
                 const std::vector<std::string>& more) {
    argv.insert(argv.end(), more.begin(), more.end());
    return argv;
  };

  ExpectStartupError(with(router, {cert}), 2,
                     {"--tls_cert_file", "needs --tls_key_file"});
  ExpectStartupError(with(router, {key}), 2,
                     {"--tls_key_file", "needs --tls_cert_file"});
  ExpectStartupError(with(router, {"--tls_cert_file=" + missing, key}), 2,
                     {"--tls_cert_file: " + missing + ": cannot open"});
  ExpectStartupError(with(router, {"--tls_cert_file=" + garbage, key}), 2,
                     {"--tls_cert_file: " + garbage + ": no PEM certificate"});
  ExpectStartupError(with(router, {cert, "--tls_key_file=" + garbage}), 2,
                     {"--tls_key_file: " + garbage + ": no unencrypted PEM"});
  ExpectStartupError(
      with(router, {cert, "--tls_key_file=" + certs_->path("client.key")}), 2,
      {"--tls_key_file", "not the private key of the certificate"});
  ExpectStartupError(with(router, {cert, key, "--tls_ca_file=" + empty}), 2,
                     {"--tls_ca_file: " + empty + ": the file is empty"});
  ExpectStartupError(
      with(router, {"--tls_ca_file=" + certs_->path("ca.pem")}), 2,
      {"--tls_ca_file", "needs --tls_cert_file and --tls_key_file"});

  const std::vector<std::string> gateway = {
      bin + "/gateway", "--model", model, "--attention_servers",
      "127.0.0.1:1", "--connect_timeout", "1"};
  ExpectStartupError(with(gateway, {"--auth_token_file=" + empty}), 2,
                     {"--auth_token_file: " + empty + ": the file is empty"});
  ExpectStartupError(with(gateway, {"--auth_token_file=" + missing}), 2,
                     {"--auth_token_file: " + missing + ": cannot open"});
  ExpectStartupError(with(gateway, {"--tls_cert_file=" + garbage, key}), 2,
                     {"--tls_cert_file: " + garbage});

  ExpectStartupError({MOE_CLI_BIN, "info", "--gateway", "127.0.0.1:1",
                      "--tls-ca-file", garbage},
                     2, {"--tls_ca_file: " + garbage + ": no PEM certificate"});
  ExpectStartupError({MOE_CLI_BIN, "info", "--gateway", "127.0.0.1:1",
                      "--auth-token-file", empty},
                     2, {"--auth_token_file: " + empty + ": the file is empty"});

  const std::string topology = certs_->path("bad-tls.json");
  testing::WriteFileOrDie(
      topology,
      nlohmann::json({{"expert_servers", 1},
                      {"attention_servers", 1},
                      {"security",
                       {{"tls_cert_file", "missing.pem"},
                        {"tls_key_file", "server.key"},
                        {"tls_ca_file", "ca.pem"}}}})
          .dump());
  ExpectStartupError({MOE_CLUSTER_BIN, "up", "--topology", topology, "--model",
                      model},
                     2, {"security.tls_cert_file: " + missing + ": cannot open"});
}

}  // namespace
}  // namespace moe
