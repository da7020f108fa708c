#include "core/security/credentials.h"

#include "core/security/client_certificate_auth.h"

namespace moe::security {

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsConfig& config, ClientCertificates client_certificates) {
  if (!config.has_identity()) return grpc::InsecureServerCredentials();
  const bool mutual =
      client_certificates == ClientCertificates::kRequired && config.has_ca();
  // REQUEST_..._AND_VERIFY rather than REQUEST_AND_REQUIRE_...: a client
  // without a certificate then gets a clear UNAUTHENTICATED from the
  // processor below instead of an anonymous handshake failure.
  grpc::SslServerCredentialsOptions options(
      mutual ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
             : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (mutual) options.pem_root_certs = config.ca_bundle;
  options.pem_key_cert_pairs.push_back({config.private_key, config.cert_chain});
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::SslServerCredentials(options);
  if (mutual) {
    credentials->SetAuthMetadataProcessor(
        std::make_shared<RequireClientCertificate>());
  }
  return credentials;
}

std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    const TlsConfig& config) {
  if (!config.enabled()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = config.ca_bundle;
  options.pem_private_key = config.private_key;
  options.pem_cert_chain = config.cert_chain;
  return grpc::SslCredentials(options);
}

}  // namespace moe::security
