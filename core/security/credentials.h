// gRPC credentials from a TlsConfig: TLS or mutual TLS when the config has
// TLS material, plaintext otherwise.
#ifndef MOE_CORE_SECURITY_CREDENTIALS_H_
#define MOE_CORE_SECURITY_CREDENTIALS_H_

#include <memory>

#include "core/security/tls_config.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace moe::security {

enum class ClientCertificates {
  kNotRequested,  // TLS only: clients authenticate otherwise (bearer token)
  kRequired,      // mutual TLS: a certificate from config.ca_bundle
};

// For a listening port. Without an identity: insecure (plaintext). With one:
// TLS serving config.cert_chain. kRequired (which needs config.has_ca())
// adds mutual TLS: the handshake asks for a client certificate and verifies
// it against config.ca_bundle, and RequireClientCertificate refuses calls
// from clients that sent none (client_certificate_auth.h).
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsConfig& config, ClientCertificates client_certificates);

// For a channel. TLS off (!config.enabled()): insecure. Otherwise TLS that
// verifies the server against config.ca_bundle (the system's roots when it
// is empty) and the address's host name or IP, presenting config's
// certificate, when it has one, for mutual TLS.
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    const TlsConfig& config);

}  // namespace moe::security

#endif  // MOE_CORE_SECURITY_CREDENTIALS_H_
