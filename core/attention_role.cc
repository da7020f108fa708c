#include "core/attention_role.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moe {

absl::string_view AttentionRoleName(AttentionRole role) {
  switch (role) {
    case AttentionRole::kBoth:
      return "both";
    case AttentionRole::kPrefill:
      return "prefill";
    case AttentionRole::kDecode:
      return "decode";
  }
  return "?";
}

absl::StatusOr<AttentionRole> ParseAttentionRole(absl::string_view name) {
  if (name == "both") return AttentionRole::kBoth;
  if (name == "prefill") return AttentionRole::kPrefill;
  if (name == "decode") return AttentionRole::kDecode;
  return absl::InvalidArgumentError(absl::StrCat(
      "role \"", name, "\" is not one of both, prefill, decode"));
}

}  // namespace moe
