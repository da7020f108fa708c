// What an attention server does with requests: prefill and decode both
// (colocated), only prefill (then ship the K/V to a decode server), or only
// decode (after receiving the K/V). Shared by the server and the launcher.
#ifndef MOE_CORE_ATTENTION_ROLE_H_
#define MOE_CORE_ATTENTION_ROLE_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe {

enum class AttentionRole { kBoth, kPrefill, kDecode };

// "both", "prefill" or "decode".
absl::string_view AttentionRoleName(AttentionRole role);
// The inverse of AttentionRoleName; InvalidArgument naming the accepted names.
absl::StatusOr<AttentionRole> ParseAttentionRole(absl::string_view name);

}  // namespace moe

#endif  // MOE_CORE_ATTENTION_ROLE_H_
