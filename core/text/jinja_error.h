// Errors inside the Jinja engine (lexer, parser, evaluator): every one is an
// absl::Status whose message names where in the template it arose.
#ifndef MOE_CORE_TEXT_JINJA_ERROR_H_
#define MOE_CORE_TEXT_JINJA_ERROR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace moe::jinja {

// 1-based position in the template source; columns count bytes.
struct Location {
  int line = 1;
  int column = 1;
};

inline std::string LocString(Location l) {
  return absl::StrCat(l.line, ":", l.column);
}

// INVALID_ARGUMENT "chat template L:C: <what>".
inline absl::Status ErrorAt(Location at, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("chat template ", LocString(at), ": ", what));
}

}  // namespace moe::jinja

#endif  // MOE_CORE_TEXT_JINJA_ERROR_H_
