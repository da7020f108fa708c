// Security of the public API's command-line clients (moe-cli, moe-loadgen):
// the shared TLS flags (core/security/security_flags.h) and
//   --auth_token_file  file holding the gateway's bearer token, sent as
//                      "authorization: Bearer <token>" on every call
#ifndef MOE_TOOLS_COMMON_CLIENT_SECURITY_H_
#define MOE_TOOLS_COMMON_CLIENT_SECURITY_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/status.h"

ABSL_DECLARE_FLAG(std::string, auth_token_file);

namespace moe::tools {

// Sets the process-wide security (core/security/process_security.h) from the
// flags: TLS towards the gateway when --tls_ca_file or a certificate is
// given, the token on every call when --auth_token_file is. Call after
// parsing flags and before any channel exists. Errors name the flag and
// the file.
absl::Status ConfigureClientSecurity();

}  // namespace moe::tools

#endif  // MOE_TOOLS_COMMON_CLIENT_SECURITY_H_
