// String operations of the Jinja builtins (Python str semantics on UTF-8:
// indices and lengths count code points; case mapping through utf8proc),
// and the argument helpers that jinja_builtins.cc shares with them. Errors
// are INVALID_ARGUMENT with a bare message (no template position).
#ifndef MOE_CORE_TEXT_JINJA_STRINGS_H_
#define MOE_CORE_TEXT_JINJA_STRINGS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/text/jinja_builtins.h"
#include "core/text/jinja_value.h"

namespace moe::jinja {

template <typename... T>
absl::Status Err(const T&... parts) {
  return absl::InvalidArgumentError(absl::StrCat(parts...));
}

// Positional argument `i`, else keyword `name`, else null.
const Value* Arg(const Args& args, size_t i, const Kwargs& kwargs, absl::string_view name);
// `v` as a string; INVALID_ARGUMENT "<what> must be a string" otherwise.
absl::StatusOr<std::string> StrArg(const Value* v, absl::string_view what);
// Values built under `budget` (and, for lists, the nesting limit).
absl::StatusOr<Value> MakeString(std::string s, Budget& budget);
absl::StatusOr<Value> MakeList(std::vector<Value> items, Budget& budget);

// str.upper() / str.lower().
std::string MapCase(absl::string_view s, bool upper);
// str.title(), or str.capitalize() when `only_first`.
std::string Title(absl::string_view s, bool only_first);
// str.strip/lstrip/rstrip(chars); null `chars` strips whitespace.
std::string Strip(absl::string_view s, const std::string* chars, bool left, bool right);
// str.split/rsplit(sep=None, maxsplit=-1) as a list of strings.
absl::StatusOr<Value> Split(const std::string& s, const Value* sep, const Value* maxsplit,
                            bool from_right, Budget& budget);
// str.replace(old, new, count=-1).
absl::StatusOr<Value> Replace(const std::string& s, const Value* old_v, const Value* new_v,
                              const Value* count_v, Budget& budget);

// obj.name(args) for a string `obj`; NOT_FOUND when str has no such method.
absl::StatusOr<Value> CallStringMethod(const Value& obj, absl::string_view name,
                                       const Args& args, const Kwargs& kwargs, Budget& budget);

}  // namespace moe::jinja

#endif  // MOE_CORE_TEXT_JINJA_STRINGS_H_
