// The process-wide security configuration that every channel
// (moe::MakeChannel) and every server (moe::StartGrpcServer, and so the
// startup health placeholder) of this process is built with.
//
// Contract: main sets it once, after parsing flags and before any channel or
// server exists (SetProcessSecurity); everything reads it afterwards. Until
// it is set the default is plaintext with no token, which is what unit tests
// and in-process clusters get. Reading and setting are thread-safe, but a
// change does not affect channels and servers that already exist.
#ifndef MOE_CORE_SECURITY_PROCESS_SECURITY_H_
#define MOE_CORE_SECURITY_PROCESS_SECURITY_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "core/security/credentials.h"
#include "core/security/tls_config.h"

namespace moe::security {

struct ProcessSecurity {
  TlsConfig tls;
  // How this process's listening ports treat client certificates; kRequired
  // (internal servers) needs tls.has_ca() and tls.has_identity().
  ClientCertificates client_certificates = ClientCertificates::kNotRequested;
  // When not empty, every call on a MakeChannel channel carries
  // "authorization: Bearer <token>" (the public API's clients).
  std::string bearer_token;
};

// Replaces the configuration. INVALID_ARGUMENT (and nothing changed) when
// kRequired comes without a CA bundle or without an identity to serve.
absl::Status SetProcessSecurity(ProcessSecurity security);

// A copy of the current configuration.
ProcessSecurity GetProcessSecurity();

// Credentials for this process's listening ports and channels
// (credentials.h, from the current configuration).
std::shared_ptr<grpc::ServerCredentials> ProcessServerCredentials();
std::shared_ptr<grpc::ChannelCredentials> ProcessChannelCredentials();

}  // namespace moe::security

#endif  // MOE_CORE_SECURITY_PROCESS_SECURITY_H_
