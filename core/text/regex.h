// A compiled PCRE2 pattern in UTF + UCP mode (\p{L}, \s and \w are
// Unicode-aware, as in the Rust `onig`/`fancy-regex` engines tokenizers
// use), JIT-compiled when the platform allows. Immutable; safe to share
// between threads (each search uses its own match data).
#ifndef MOE_CORE_TEXT_REGEX_H_
#define MOE_CORE_TEXT_REGEX_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moe::text {

class Regex {
 public:
  // INVALID_ARGUMENT with PCRE2's message and offset when it does not
  // compile.
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(
      absl::string_view pattern);
  // A pattern that matches `literal` exactly.
  static absl::StatusOr<std::shared_ptr<const Regex>> Literal(
      absl::string_view literal);
  ~Regex();

  // [begin, end) byte ranges of the successive non-overlapping matches in
  // `text` (valid UTF-8); empty matches are skipped.
  std::vector<std::pair<size_t, size_t>> FindAll(absl::string_view text) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8
};

}  // namespace moe::text

#endif  // MOE_CORE_TEXT_REGEX_H_
