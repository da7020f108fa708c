#include "tests/security_test_util.h"

#include "absl/strings/ascii.h"
#include "core/rpc/server_util.h"
#include "core/security/bearer_token_interceptor.h"
#include "core/security/credentials.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "tests/process_util.h"

namespace moe::testing {

TestCertificates::TestCertificates() {
  const ProcessResult made = RunProcess(
      {std::string(MOE_SOURCE_DIR) + "/tests/security/make_test_certs.sh",
       dir_.path()},
      {}, 60);
  ok_ = made.exit_code == 0;
  if (!ok_) {
    ADD_FAILURE() << "make_test_certs.sh failed (" << made.exit_code
                  << "):\n" << made.out << made.err;
  }
}

std::string TestCertificates::token() const {
  return std::string(
      absl::StripTrailingAsciiWhitespace(ReadFileOrDie(path("token"))));
}

security::TlsConfig TestCertificates::Client(const std::string& cert_name) const {
  security::TlsFiles files;
  files.ca_file = path("ca.pem");
  if (!cert_name.empty()) {
    files.cert_file = path(cert_name + ".pem");
    files.key_file = path(cert_name + ".key");
  }
  absl::StatusOr<security::TlsConfig> tls = security::LoadTlsConfig(files);
  EXPECT_TRUE(tls.ok()) << tls.status();
  return tls.value_or(security::TlsConfig());
}

security::TlsConfig TestCertificates::Trusting(const std::string& ca_name) const {
  security::TlsFiles files;
  files.ca_file = path(ca_name + ".pem");
  absl::StatusOr<security::TlsConfig> tls = security::LoadTlsConfig(files);
  EXPECT_TRUE(tls.ok()) << tls.status();
  return tls.value_or(security::TlsConfig());
}

std::shared_ptr<grpc::Channel> TestChannel(const std::string& address,
                                           const security::TlsConfig& tls,
                                           const std::string& bearer_token) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  // A fresh connection per channel, so that one test's handshake outcome
  // never rides on another's connection.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      security::MakeChannelCredentials(tls);
  if (bearer_token.empty()) {
    return grpc::CreateCustomChannel(address, credentials, args);
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, credentials, args,
      security::BearerTokenInterceptors(bearer_token));
}

}  // namespace moe::testing
