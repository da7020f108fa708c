// The TLS flags every server and client program shares, defined once here:
//   --tls_cert_file  this process's certificate chain (PEM): served on its
//                    port, and presented to peers as its client certificate
//   --tls_key_file   the private key of that certificate (PEM, unencrypted)
//   --tls_ca_file    CA bundle (PEM) trusted for peers: clients verify
//                    servers with it; internal servers require client
//                    certificates signed by it (mutual TLS)
// All empty (the default): plaintext everywhere.
#ifndef MOE_CORE_SECURITY_SECURITY_FLAGS_H_
#define MOE_CORE_SECURITY_SECURITY_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/security/tls_config.h"

ABSL_DECLARE_FLAG(std::string, tls_cert_file);
ABSL_DECLARE_FLAG(std::string, tls_key_file);
ABSL_DECLARE_FLAG(std::string, tls_ca_file);

namespace moe::security {

// The three flags, loaded and checked (LoadTlsConfig).
absl::StatusOr<TlsConfig> TlsConfigFromFlags();

// What a server's port is for.
enum class ServerExposure {
  kInternal,  // router, expert and attention servers: mutual TLS with a CA
  kPublic,    // the gateway: TLS; clients authenticate with a bearer token
};

// A server process's security from the flags, set process-wide
// (process_security.h); call from main before any channel or server exists.
// A server that is given a CA must also be given its certificate and key
// (its peers connect to it over TLS). Errors name the flag and the file.
absl::Status ConfigureServerSecurityFromFlags(ServerExposure exposure);

// A client program's security (moe-cli, moe-loadgen) from the flags, set
// process-wide, its calls carrying `bearer_token` when not empty.
absl::Status ConfigureClientSecurityFromFlags(std::string bearer_token);

}  // namespace moe::security

#endif  // MOE_CORE_SECURITY_SECURITY_FLAGS_H_
