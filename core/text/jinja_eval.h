// Jinja evaluator: renders a parsed Program with a set of global variables.
// Scoping follows Jinja: a for-loop iteration and a macro call each open a
// scope that `set` writes into; `ns.attr = ...` on a namespace() reaches
// through scopes. Rendering is bounded: nesting depth, the number of
// evaluation steps (loop iterations included) and the bytes of strings and
// lists built are all capped, so a hostile template fails instead of
// running away.
#ifndef MOE_CORE_TEXT_JINJA_EVAL_H_
#define MOE_CORE_TEXT_JINJA_EVAL_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/text/jinja_parser.h"
#include "core/text/jinja_value.h"

namespace moe::jinja {

struct RenderLimits {
  int max_depth = 200;               // nested expressions, statements, macro calls
  int64_t max_steps = 1'000'000;     // expressions + statements + loop iterations
  int64_t max_bytes = 64ll << 20;    // strings, lists and output built
};

// Renders `program` with `globals` visible to it (names not among them are
// undefined). Errors are INVALID_ARGUMENT "chat template L:C: ..." except a
// template's raise_exception(msg), which is INVALID_ARGUMENT with exactly
// msg. Thread-safe for concurrent calls on one program.
absl::StatusOr<std::string> Render(const Program& program,
                                   std::vector<std::pair<std::string, Value>> globals,
                                   const RenderLimits& limits);

}  // namespace moe::jinja

#endif  // MOE_CORE_TEXT_JINJA_EVAL_H_
