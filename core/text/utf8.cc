#include "core/text/utf8.h"

namespace moe::text {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";

// Length of the well-formed character at s[i], or 0 when ill-formed; in
// `consumed`, how many bytes form its maximal ill-formed subpart (≥ 1).
int WellFormedAt(absl::string_view s, size_t i, int* consumed) {
  const unsigned char c = s[i];
  *consumed = 1;
  if (c < 0x80) return 1;
  int n;
  unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return 0;
    const unsigned char d = s[i + k];
    const unsigned char min = k == 1 ? lo : 0x80;
    const unsigned char max = k == 1 ? hi : 0xBF;
    if (d < min || d > max) return 0;
    *consumed = k + 1;
  }
  return n;
}

}  // namespace

std::optional<size_t> FirstInvalidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    int consumed;
    const int n = WellFormedAt(s, i, &consumed);
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

std::string LossyUtf8(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    int consumed;
    const int n = WellFormedAt(bytes, i, &consumed);
    if (n > 0) {
      out.append(bytes.data() + i, n);
      i += n;
    } else {
      out += kReplacement;
      i += consumed;
    }
  }
  return out;
}

int Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool EndsWithReplacement(absl::string_view s) {
  return s.size() >= 3 && s.substr(s.size() - 3) == kReplacement;
}

}  // namespace moe::text
