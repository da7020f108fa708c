#include "tools/common/client_security.h"

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "core/security/bearer_token.h"
#include "core/security/security_flags.h"

ABSL_FLAG(std::string, auth_token_file, "",
          "File holding the gateway's bearer token (its --auth_token_file); "
          "sent as \"authorization: Bearer <token>\" on every call.");

namespace moe::tools {

absl::Status ConfigureClientSecurity() {
  std::string token;
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file);
      !path.empty()) {
    absl::StatusOr<std::string> loaded =
        security::LoadBearerToken("--auth_token_file", path);
    if (!loaded.ok()) return loaded.status();
    token = *std::move(loaded);
  }
  return security::ConfigureClientSecurityFromFlags(std::move(token));
}

}  // namespace moe::tools
