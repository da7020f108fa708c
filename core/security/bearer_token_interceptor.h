// A client interceptor that adds "authorization: Bearer <token>" to every
// call of a channel; moe::MakeChannel installs it when the process has a
// bearer token (process_security.h). Metadata rather than gRPC call
// credentials, because those are never sent on plaintext channels and the
// token must work with and without TLS.
#ifndef MOE_CORE_SECURITY_BEARER_TOKEN_INTERCEPTOR_H_
#define MOE_CORE_SECURITY_BEARER_TOKEN_INTERCEPTOR_H_

#include <memory>
#include <string>
#include <vector>

#include "grpcpp/support/client_interceptor.h"

namespace moe::security {

// The interceptor factories for a channel whose calls carry `token`.
std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
BearerTokenInterceptors(std::string token);

}  // namespace moe::security

#endif  // MOE_CORE_SECURITY_BEARER_TOKEN_INTERCEPTOR_H_
