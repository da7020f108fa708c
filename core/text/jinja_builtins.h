// The built-in filters, tests, methods and attribute/item access of the
// Jinja evaluator. Functions here know nothing of template positions: their
// errors are INVALID_ARGUMENT with a bare message, to which the evaluator
// adds the line:column of the expression.
#ifndef MOE_CORE_TEXT_JINJA_BUILTINS_H_
#define MOE_CORE_TEXT_JINJA_BUILTINS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/text/jinja_value.h"

namespace moe::jinja {

// The work one Render may do, in bytes of strings and list items created:
// a template that builds more fails instead of exhausting memory or time.
class Budget {
 public:
  explicit Budget(int64_t bytes) : left_(bytes) {}
  absl::Status Charge(size_t bytes) {
    if (static_cast<int64_t>(bytes) > left_) {
      left_ = 0;
      return absl::ResourceExhaustedError("exceeds the rendering budget");
    }
    left_ -= static_cast<int64_t>(bytes);
    return absl::OkStatus();
  }

 private:
  int64_t left_;
};

using Args = std::vector<Value>;
using Kwargs = std::vector<std::pair<std::string, Value>>;

bool IsKnownFilter(absl::string_view name);
bool IsKnownTest(absl::string_view name);

absl::StatusOr<Value> ApplyFilter(absl::string_view name, const Value& subject,
                                  const Args& args, const Kwargs& kwargs, Budget& budget);
absl::StatusOr<bool> ApplyTest(absl::string_view name, const Value& subject,
                               const Args& args);

// obj.name(args): the str, dict and list methods. NOT_FOUND when `obj` has
// no method `name` (the caller then reports it with its position).
absl::StatusOr<Value> CallMethod(const Value& obj, absl::string_view name,
                                 const Args& args, const Kwargs& kwargs, Budget& budget);

// obj.name as Jinja's getattr: a dict's item, a namespace's attribute,
// otherwise undefined.
Value GetAttr(const Value& obj, absl::string_view name);

// obj[key]: list and string indices (negative from the end), dict keys;
// undefined when absent or not subscriptable.
Value GetItem(const Value& obj, const Value& key);

// obj[start:stop:step] on lists and strings (Python semantics); null
// pointers are omitted parts. INVALID_ARGUMENT for a zero step or a
// non-integer part.
absl::StatusOr<Value> Slice(const Value& obj, const Value* start, const Value* stop,
                            const Value* step, Budget& budget);

// The items `for x in v` visits: a list's items, a dict's keys, a string's
// characters; none for undefined. INVALID_ARGUMENT when not iterable.
absl::StatusOr<std::vector<Value>> Iterate(const Value& v, Budget& budget);

// `needle in haystack`.
absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle, Budget& budget);

// Python's len().
absl::StatusOr<int64_t> Length(const Value& v);

}  // namespace moe::jinja

#endif  // MOE_CORE_TEXT_JINJA_BUILTINS_H_
