// Jinja lexer: splits a template into text and tag tokens, applying the
// whitespace rules HF uses (trim_blocks, lstrip_blocks, `-` / `+`).
#ifndef MOE_CORE_TEXT_JINJA_LEXER_H_
#define MOE_CORE_TEXT_JINJA_LEXER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/text/jinja_error.h"

namespace moe::jinja {

enum class Tok {
  kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd,
  kName, kString, kInt, kFloat, kOp, kEof
};

struct Token {
  Tok kind;
  std::string text;  // text / name / decoded string / number / operator
  Location loc;
};

// The tokens of `source`, ending with kEof; text tokens already have the
// whitespace control applied. INVALID_ARGUMENT naming line:column on
// malformed input (unterminated string, comment or tag, stray character).
absl::StatusOr<std::vector<Token>> Lex(absl::string_view source);

}  // namespace moe::jinja

#endif  // MOE_CORE_TEXT_JINJA_LEXER_H_
