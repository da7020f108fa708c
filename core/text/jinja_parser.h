// Jinja parser: tokens (jinja_lexer.h) to an immutable syntax tree. Names
// of filters and tests are checked here, so an unsupported one is refused
// when the template is parsed, not when it is rendered.
#ifndef MOE_CORE_TEXT_JINJA_PARSER_H_
#define MOE_CORE_TEXT_JINJA_PARSER_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/text/jinja_error.h"
#include "core/text/jinja_value.h"

namespace moe::jinja {

// Nesting of blocks and expressions the parser accepts; deeper templates
// are refused, which bounds every recursion over the tree.
inline constexpr int kMaxParseDepth = 96;

struct Expr {
  enum class Kind {
    kLiteral,    // literal
    kName,       // name
    kList,       // args: items
    kTuple,      // args: items (evaluates to a list)
    kDict,       // args: key, value, key, value...
    kAttr,       // args[0].name
    kSubscript,  // args[0][args[1]]
    kSlice,      // args[0][args[1]:args[2]:args[3]], absent parts null
    kUnary,      // name ("-", "+") args[0]
    kBinary,     // args[0] name args[1]; + - * / // % ** ~
    kCompare,    // args[0] ops[0] args[1] ops[1] args[2]... (chained)
    kAnd,        // args[0] and args[1]
    kOr,         // args[0] or args[1]
    kNot,        // not args[0]
    kTest,       // args[0] is [not] name(args[1:]); negated
    kFilter,     // args[0] | name(args[1:], kwargs)
    kCall,       // args[0](args[1:], kwargs)
    kCond,       // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind = Kind::kLiteral;
  Location loc;
  Value literal;
  std::string name;
  std::vector<std::string> ops;
  std::vector<std::unique_ptr<Expr>> args;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  bool negated = false;
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches (a null condition is the else branch)
    kFor,       // for targets in expr [if cond]: body [else: else_body]
    kSet,       // set targets = expr, or set targets[0].attr = expr
    kSetBlock,  // set targets[0] %} body {% endset
    kMacro,     // macro name(params = defaults): body
    kBreak,
    kContinue,
  };
  Kind kind = Kind::kText;
  Location loc;
  std::string text;
  std::unique_ptr<Expr> expr;
  std::unique_ptr<Expr> cond;
  std::vector<std::pair<std::unique_ptr<Expr>, Body>> branches;
  std::vector<std::string> targets;
  std::string attr;  // kSet on a namespace attribute
  Body body;
  Body else_body;
  std::string name;  // macro name
  std::vector<std::string> params;
  std::vector<std::unique_ptr<Expr>> defaults;  // per param, null if none
};

struct Program {
  Body body;
};

// Parses a whole template. INVALID_ARGUMENT "chat template L:C: ..." when
// it is malformed or uses an unsupported tag, filter, test or syntax.
absl::StatusOr<std::shared_ptr<const Program>> ParseTemplate(absl::string_view source);

}  // namespace moe::jinja

#endif  // MOE_CORE_TEXT_JINJA_PARSER_H_
