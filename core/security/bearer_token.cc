#include "core/security/bearer_token.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/security/pem_file.h"

namespace moe::security {

absl::StatusOr<std::string> LoadBearerToken(absl::string_view flag,
                                            const std::string& path) {
  absl::StatusOr<std::string> text = ReadSecretFile(flag, path);
  if (!text.ok()) return text.status();
  std::string token = *std::move(text);
  if (absl::EndsWith(token, "\n")) token.pop_back();
  if (absl::EndsWith(token, "\r")) token.pop_back();
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path, ": the token is empty"));
  }
  for (const char c : token) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": ", path,
          ": the token must be printable ASCII without spaces or line "
          "breaks"));
    }
  }
  return token;
}

std::string BearerAuthorizationValue(absl::string_view token) {
  return absl::StrCat(kBearerPrefix, token);
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return difference == 0;
}

bool HasBearerToken(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    absl::string_view token) {
  if (token.empty()) return false;
  auto [begin, end] = metadata.equal_range(kAuthorizationKey);
  if (begin == end || std::next(begin) != end) return false;
  const absl::string_view sent(begin->second.data(), begin->second.size());
  return ConstantTimeEquals(sent, BearerAuthorizationValue(token));
}

}  // namespace moe::security
