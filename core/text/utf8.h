// UTF-8 helpers of the text layer.
#ifndef MOE_CORE_TEXT_UTF8_H_
#define MOE_CORE_TEXT_UTF8_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace moe::text {

// Byte offset of the first byte that does not begin a well-formed UTF-8
// character (overlong forms, surrogates and values past U+10FFFF are not
// well-formed); nullopt when all of `s` is valid.
std::optional<size_t> FirstInvalidUtf8(absl::string_view s);

// `bytes` as UTF-8 with every ill-formed sequence replaced by U+FFFD, one
// per maximal ill-formed subpart (the WHATWG / Unicode "best practice" that
// Rust's from_utf8_lossy and JavaScript's TextDecoder follow).
std::string LossyUtf8(absl::string_view bytes);

// Length in bytes of the character that starts with `lead` (1 for a byte
// that cannot start one).
int Utf8Length(unsigned char lead);

// Appends code point `cp` as UTF-8.
void AppendUtf8(uint32_t cp, std::string& out);

// True when `s` ends in U+FFFD (the mark of an incomplete character after a
// lossy decode).
bool EndsWithReplacement(absl::string_view s);

}  // namespace moe::text

#endif  // MOE_CORE_TEXT_UTF8_H_
