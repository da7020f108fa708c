// Bearer tokens for the public API: "authorization: Bearer <token>" call
// metadata, the token read from a file (--auth_token_file).
#ifndef MOE_CORE_SECURITY_BEARER_TOKEN_H_
#define MOE_CORE_SECURITY_BEARER_TOKEN_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/string_ref.h"

namespace moe::security {

// gRPC metadata keys are lowercase.
inline constexpr const char kAuthorizationKey[] = "authorization";
inline constexpr const char kBearerPrefix[] = "Bearer ";
// The refusal's message; it never contains the token sent or expected.
inline constexpr const char kInvalidBearerToken[] =
    "missing or invalid bearer token";

// The token in the file at `path` (`flag` names it in errors): the file's
// text less one trailing "\n" or "\r\n". INVALID_ARGUMENT "FLAG: PATH: ..."
// when that is empty or holds anything but printable ASCII without spaces
// (what a metadata value can carry); NOT_FOUND when unreadable.
absl::StatusOr<std::string> LoadBearerToken(absl::string_view flag,
                                            const std::string& path);

// "Bearer <token>", the metadata value a client sends.
std::string BearerAuthorizationValue(absl::string_view token);

// True when `metadata` (a call's client metadata) holds exactly one
// authorization entry equal to "Bearer <token>". The comparison takes the
// same time whatever the sent value's content, so the expected token cannot
// be guessed byte by byte from response times.
bool HasBearerToken(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    absl::string_view token);

// Constant-time (for equal lengths) string equality.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace moe::security

#endif  // MOE_CORE_SECURITY_BEARER_TOKEN_H_
