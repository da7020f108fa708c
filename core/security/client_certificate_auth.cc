#include "core/security/client_certificate_auth.h"

#include "grpc/grpc_security_constants.h"

namespace moe::security {

grpc::Status RequireClientCertificate::Process(
    const InputMetadata& /*auth_metadata*/, grpc::AuthContext* context,
    OutputMetadata* /*consumed_auth_metadata*/,
    OutputMetadata* /*response_metadata*/) {
  // gRPC's TLS transport records the peer's certificate under this property
  // only when the peer sent one; with ..._AND_VERIFY it has been verified.
  if (context != nullptr &&
      !context->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME).empty()) {
    return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      kClientCertificateRequired);
}

}  // namespace moe::security
