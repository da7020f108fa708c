// The second half of mutual TLS on internal ports. Their TLS handshake asks
// for a client certificate and verifies any that is offered against the CA
// bundle (GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY), so a certificate
// from another CA fails the handshake itself (the client sees UNAVAILABLE,
// no call is made). A client that offers no certificate completes the
// handshake; this processor then refuses each of its calls with
// UNAUTHENTICATED, which tells the caller what is missing where a failed
// handshake would only say "unavailable".
#ifndef MOE_CORE_SECURITY_CLIENT_CERTIFICATE_AUTH_H_
#define MOE_CORE_SECURITY_CLIENT_CERTIFICATE_AUTH_H_

#include "grpcpp/security/auth_metadata_processor.h"

namespace moe::security {

inline constexpr const char kClientCertificateRequired[] =
    "a client certificate signed by a trusted CA is required";

// Thread-safe and stateless; runs inline on gRPC's thread (IsBlocking() is
// false: it only reads the call's auth context).
class RequireClientCertificate final : public grpc::AuthMetadataProcessor {
 public:
  bool IsBlocking() const override { return false; }
  // OK when the TLS peer presented a certificate (verified by the handshake);
  // UNAUTHENTICATED with kClientCertificateRequired otherwise.
  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;
};

}  // namespace moe::security

#endif  // MOE_CORE_SECURITY_CLIENT_CERTIFICATE_AUTH_H_
