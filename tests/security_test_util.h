// TLS material for the security tests, generated at test time by
// tests/security/make_test_certs.sh (never committed), and channels built
// from it the way a given kind of client would.
#ifndef MOE_TESTS_SECURITY_TEST_UTIL_H_
#define MOE_TESTS_SECURITY_TEST_UTIL_H_

#include <memory>
#include <string>

#include "core/security/tls_config.h"
#include "grpcpp/channel.h"
#include "tests/test_util.h"

namespace moe::testing {

// The files of make_test_certs.sh in a fresh temporary directory (see the
// script for what each is). ADD_FAILUREs when the script fails.
class TestCertificates {
 public:
  TestCertificates();
  bool ok() const { return ok_; }
  std::string path(const std::string& name) const { return dir_.Join(name); }
  // The bearer token in path("token"), without its newline.
  std::string token() const;

  // Client configurations (LoadTlsConfig of these files; ADD_FAILURE on
  // error): the trusted CA with the named certificate ("client", "server",
  // "untrusted-client"), or with none ("").
  security::TlsConfig Client(const std::string& cert_name) const;
  // Trusting `ca_name` ("ca" or "other-ca") only, no certificate.
  security::TlsConfig Trusting(const std::string& ca_name) const;

 private:
  TempDir dir_;
  bool ok_ = false;
};

// A channel to `address` with `tls` (plaintext when it is empty) whose calls
// carry `bearer_token` when not empty.
std::shared_ptr<grpc::Channel> TestChannel(const std::string& address,
                                           const security::TlsConfig& tls,
                                           const std::string& bearer_token = "");

}  // namespace moe::testing

#endif  // MOE_TESTS_SECURITY_TEST_UTIL_H_
