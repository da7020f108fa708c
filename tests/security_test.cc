// Units of core/security and the launcher's "security" section: bearer
// token files and matching, PEM loading and its errors, the process-wide
// configuration's checks, and the server flags the topology produces.
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "core/security/bearer_token.h"
#include "core/security/process_security.h"
#include "core/security/tls_config.h"
#include "gtest/gtest.h"
#include "tests/security_test_util.h"
#include "tests/test_util.h"
#include "tools/moe_cluster/server_args.h"
#include "tools/moe_cluster/topology.h"

namespace moe {
namespace {

using ::moe::testing::TempDir;
using ::moe::testing::TestCertificates;
using ::moe::testing::WriteFileOrDie;

absl::StatusOr<std::string> TokenFrom(const TempDir& dir,
                                      const std::string& text) {
  const std::string path = dir.Join("token");
  WriteFileOrDie(path, text);
  return security::LoadBearerToken("--auth_token_file", path);
}

TEST(BearerTokenTest, FileLosesOneTrailingNewline) {
  TempDir dir;
  EXPECT_EQ(TokenFrom(dir, "s3cret\n").value(), "s3cret");
  EXPECT_EQ(TokenFrom(dir, "s3cret\r\n").value(), "s3cret");
  EXPECT_EQ(TokenFrom(dir, "s3cret").value(), "s3cret");
}

TEST(BearerTokenTest, BadFilesAreErrorsNamingFlagAndPath) {
  TempDir dir;
  const std::string path = dir.Join("token");
  struct Case {
    std::string text;
    std::string message;
  };
  for (const Case& c : {Case{"", "the file is empty"},
                        Case{"\n", "the token is empty"},
                        Case{"two words\n", "printable ASCII without spaces"},
                        Case{"a\nb\n", "printable ASCII without spaces"}}) {
    const absl::StatusOr<std::string> token = TokenFrom(dir, c.text);
    ASSERT_FALSE(token.ok()) << c.text;
    EXPECT_EQ(token.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(token.status().message(),
                                 absl::StrCat("--auth_token_file: ", path, ": ")))
        << token.status();
    EXPECT_TRUE(absl::StrContains(token.status().message(), c.message))
        << token.status();
  }
  const absl::StatusOr<std::string> missing =
      security::LoadBearerToken("--auth_token_file", dir.Join("nothing"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(BearerTokenTest, MatchesOnlyOneExactBearerHeader) {
  using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;
  const std::string good = "Bearer tok";
  EXPECT_TRUE(security::HasBearerToken(Metadata{{"authorization", good}}, "tok"));
  EXPECT_FALSE(security::HasBearerToken(Metadata{}, "tok"));
  EXPECT_FALSE(security::HasBearerToken(
      Metadata{{"authorization", "Bearer tok2"}}, "tok"));
  EXPECT_FALSE(security::HasBearerToken(
      Metadata{{"authorization", "Bearer to"}}, "tok"));
  EXPECT_FALSE(security::HasBearerToken(Metadata{{"authorization", "tok"}}, "tok"));
  EXPECT_FALSE(security::HasBearerToken(
      Metadata{{"authorization", "bearer tok"}}, "tok"));
  EXPECT_FALSE(security::HasBearerToken(
      Metadata{{"authorization", good}, {"authorization", good}}, "tok"));
  EXPECT_FALSE(security::HasBearerToken(Metadata{{"x-token", good}}, "tok"));
  // No token configured never matches.
  EXPECT_FALSE(security::HasBearerToken(Metadata{{"authorization", "Bearer "}}, ""));
  EXPECT_TRUE(security::ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(security::ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(security::ConstantTimeEquals("abc", "ab"));
}

TEST(TlsConfigTest, LoadsMatchingMaterialAndRefusesEveryMismatch) {
  const TestCertificates certs;
  ASSERT_TRUE(certs.ok());
  security::TlsFiles files;
  files.cert_file = certs.path("server.pem");
  files.key_file = certs.path("server.key");
  files.ca_file = certs.path("ca.pem");
  const absl::StatusOr<security::TlsConfig> tls = security::LoadTlsConfig(files);
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(tls->has_identity());
  EXPECT_TRUE(tls->has_ca());
  EXPECT_FALSE(security::LoadTlsConfig(security::TlsFiles())->enabled());

  auto error = [&](security::TlsFiles f) {
    const absl::StatusOr<security::TlsConfig> loaded = security::LoadTlsConfig(f);
    EXPECT_FALSE(loaded.ok());
    return std::string(loaded.status().message());
  };
  security::TlsFiles no_key = files;
  no_key.key_file.clear();
  EXPECT_TRUE(absl::StrContains(error(no_key), "--tls_cert_file"));
  EXPECT_TRUE(absl::StrContains(error(no_key), "needs --tls_key_file"));

  security::TlsFiles wrong_key = files;
  wrong_key.key_file = certs.path("client.key");
  EXPECT_TRUE(absl::StrContains(error(wrong_key), "not the private key"));

  // A good certificate followed by a block that does not parse.
  const std::string broken = certs.path("broken.pem");
  WriteFileOrDie(broken, testing::ReadFileOrDie(certs.path("ca.pem")) +
                             "-----BEGIN CERTIFICATE-----\nAAAA\n"
                             "-----END CERTIFICATE-----\n");
  security::TlsFiles broken_ca = files;
  broken_ca.ca_file = broken;
  EXPECT_TRUE(absl::StrContains(error(broken_ca),
                                absl::StrCat("--tls_ca_file: ", broken,
                                             ": certificate 2 does not parse")))
      << error(broken_ca);

  // A key is not a certificate, nor the reverse.
  security::TlsFiles swapped = files;
  std::swap(swapped.cert_file, swapped.key_file);
  EXPECT_TRUE(absl::StrContains(error(swapped), "no PEM certificate found"));
}

TEST(ProcessSecurityTest, MutualTlsNeedsACaAndAnIdentity) {
  const TestCertificates certs;
  ASSERT_TRUE(certs.ok());
  security::ProcessSecurity security;
  security.tls = certs.Client("");  // a CA, no certificate
  security.client_certificates = security::ClientCertificates::kRequired;
  EXPECT_EQ(security::SetProcessSecurity(security).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(security::GetProcessSecurity().tls.enabled());  // unchanged
}

TEST(TopologySecurityTest, PathsResolveAgainstTheTopologyFolder) {
  const absl::StatusOr<cluster::Topology> topology = cluster::ParseTopology(
      R"({"expert_servers": 1, "attention_servers": 1,
          "security": {"tls_cert_file": "certs/s.pem",
                       "tls_key_file": "/abs/s.key",
                       "tls_ca_file": "../ca.pem",
                       "auth_token_file": "token"}})",
      "/etc/moe/cluster.json");
  ASSERT_TRUE(topology.ok()) << topology.status();
  EXPECT_EQ(topology->security.tls_cert_file, "/etc/moe/certs/s.pem");
  EXPECT_EQ(topology->security.tls_key_file, "/abs/s.key");
  EXPECT_EQ(topology->security.tls_ca_file, "/etc/ca.pem");
  EXPECT_EQ(topology->security.auth_token_file, "/etc/moe/token");
}

TEST(TopologySecurityTest, PartialTlsAndUnknownKeysAreErrors) {
  const absl::StatusOr<cluster::Topology> partial = cluster::ParseTopology(
      R"({"expert_servers": 1, "attention_servers": 1,
          "security": {"tls_cert_file": "s.pem", "tls_key_file": "s.key"}})",
      "t.json");
  ASSERT_FALSE(partial.ok());
  EXPECT_TRUE(absl::StrContains(partial.status().message(),
                                "security: tls_cert_file, tls_key_file and "
                                "tls_ca_file go together"))
      << partial.status();
  const absl::StatusOr<cluster::Topology> typo = cluster::ParseTopology(
      R"({"expert_servers": 1, "attention_servers": 1,
          "security": {"tls_cert": "s.pem"}})",
      "t.json");
  ASSERT_FALSE(typo.ok());
  EXPECT_TRUE(absl::StrContains(typo.status().message(),
                                "security.tls_cert: unknown key"))
      << typo.status();
}

TEST(TopologySecurityTest, EveryServerGetsTheTlsFlagsAndTheGatewayTheToken) {
  cluster::ClusterPlan plan;
  plan.expert_servers.push_back({"expert-0", {{0, 0}}, std::nullopt, std::nullopt});
  plan.attention_servers.push_back({});
  plan.attention_servers.back().name = "attention-0";
  plan.security.tls_cert_file = "/c/s.pem";
  plan.security.tls_key_file = "/c/s.key";
  plan.security.tls_ca_file = "/c/ca.pem";
  plan.security.auth_token_file = "/c/token";
  const std::vector<cluster::ServerLaunch> launches =
      cluster::PlanLaunches(plan, "/model");
  ASSERT_EQ(launches.size(), 4u);
  for (const cluster::ServerLaunch& l : launches) {
    SCOPED_TRACE(l.name);
    auto has = [&](const std::string& arg) {
      return std::find(l.args.begin(), l.args.end(), arg) != l.args.end();
    };
    EXPECT_TRUE(has("--tls_cert_file=/c/s.pem"));
    EXPECT_TRUE(has("--tls_key_file=/c/s.key"));
    EXPECT_TRUE(has("--tls_ca_file=/c/ca.pem"));
    EXPECT_EQ(has("--auth_token_file=/c/token"), l.name == "gateway");
  }
  // Without a security section, no such flags.
  plan.security = {};
  for (const cluster::ServerLaunch& l : cluster::PlanLaunches(plan, "/model")) {
    for (const std::string& arg : l.args) {
      EXPECT_FALSE(absl::StartsWith(arg, "--tls_")) << l.name << " " << arg;
      EXPECT_FALSE(absl::StartsWith(arg, "--auth_token")) << l.name << " " << arg;
    }
  }
}

}  // namespace
}  // namespace moe
